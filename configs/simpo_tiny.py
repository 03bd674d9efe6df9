"""SimPO (Meng et al. 2024): reference-free, length-normalised log-probs, target margin γ.

COMMAND:
  python -m w2s_jax.main --config=configs/simpo_tiny.py:smoke --workdir=/tmp/simpo_tiny
  python -m w2s_jax.main --config=configs/simpo_tiny.py --workdir=runs/simpo_tiny

DATA: smoke: NOT sampled: `chain_sum` worked solutions (chosen) vs the same solution with a wrong final
  answer or cut off before its answer (rejected), checked with reasoning-gym's scorer, from a randomly
  initialised tiny model. Full (no arg): SAMPLED: the tiny model fine-tuned on `chain_sum` worked solutions
  (cached) samples 8 solutions per prompt, the task's scorer marks them, and pairs are correct (chosen) vs
  incorrect (rejected) solutions of one prompt; the SFT model is the start.
EXPECTED: `eval_reward_accuracy` (share of held-out pairs with a positive implicit reward margin) ends
  above `eval_reward_accuracy_start` (its value before training), both in metrics.jsonl.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, objective={"name": "simpo", "beta": 2.0, "gamma_beta_ratio": 0.5, "label_smoothing": 0.0}
  )
