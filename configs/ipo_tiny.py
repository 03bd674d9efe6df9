"""IPO (Azar et al. 2023): squared loss on the length-averaged log-ratio margin, target 1/(2β).

COMMAND:
  python -m w2s_jax.main --config=configs/ipo_tiny.py:smoke --workdir=/tmp/ipo_tiny
  python -m w2s_jax.main --config=configs/ipo_tiny.py --workdir=runs/ipo_tiny

DATA: smoke: NOT sampled: `chain_sum` worked solutions (chosen) vs the same solution with a wrong final
  answer or cut off before its answer (rejected), checked with reasoning-gym's scorer, from a randomly
  initialised tiny model (also the reference). Full (no arg): SAMPLED: the tiny model fine-tuned on
  `chain_sum` worked solutions (cached) samples 8 solutions per prompt, the task's scorer marks them, and
  pairs are correct (chosen) vs incorrect (rejected) solutions of one prompt; the SFT model is the start and
  the reference.
EXPECTED: `eval_reward_accuracy` (share of held-out pairs with a positive implicit reward margin) ends
  above `eval_reward_accuracy_start` (its value before training), both in metrics.jsonl.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(arg, objective={"name": "ipo", "beta": 0.1})
