"""GRPO (DeepSeekMath): group-normalised advantages, PPO-clip loss, k3 KL to the SFT model in the loss.

COMMAND:
  python -m w2s_jax.main --config=configs/grpo_tiny.py:smoke --workdir=/tmp/grpo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "grpo"
  c.loss.name = "ppo"
  c.loss.reduction = "seq-mean-token-mean"  # the GRPO paper's 1/G Σ_i 1/|o_i| Σ_t
  c.kl.coef = 0.04
  c.kl.kind = "k3"
  c.kl.where = "loss"
  return c
