"""Reinforcement learning with verifiable rewards on the one train step.

- `rollout`: prompts → G samples per prompt (the sampler) → rewards (the task's verifier, format, overlong).
- `batch`: KL in the reward, advantages by name, rejection-sampling (RFT) filtering, minibatches.
- `objective`: `rl_objective` (policy loss by kind, KL in the loss, PPO value loss) and `ActorCritic`.
- `evaluate`: pass@1, unbiased pass@k and maj@k on a held-out split.
- `sft_init`: the SFT phase the policy starts from (the SFT loop on worked solutions).
- `loop`: `train_rl(config, workdir)`, the resumable RL loop behind `task = "rl"`.
"""

from w2s_jax.rl.batch import ADVANTAGES, compute_advantages, rft_keep
from w2s_jax.rl.objective import ActorCritic, completion_logprobs, rl_objective

__all__ = [
  "ADVANTAGES", "ActorCritic", "completion_logprobs", "compute_advantages", "rft_keep", "rl_objective",
]
