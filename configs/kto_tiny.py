"""KTO (Ethayarajh et al. 2024) on UNPAIRED examples: correct solutions desirable, incorrect undesirable,
with TRL's KL reference point from mismatched prompt/completion rows.

COMMAND:
  python -m w2s_jax.main --config=configs/kto_tiny.py:smoke --workdir=/tmp/kto_tiny
  python -m w2s_jax.main --config=configs/kto_tiny.py --workdir=runs/kto_tiny

DATA: smoke: NOT sampled: `chain_sum` worked solutions (chosen) vs the same solution with a wrong final
  answer or cut off before its answer (rejected), checked with reasoning-gym's scorer, from a randomly
  initialised tiny model (also the reference). Full (no arg): SAMPLED: the tiny model fine-tuned on
  `chain_sum` worked solutions (cached) samples 8 solutions per prompt, the task's scorer marks them, and
  pairs are correct (chosen) vs incorrect (rejected) solutions of one prompt; every scored completion is one
  unpaired example; the SFT model is the start and the reference.
EXPECTED: `eval_reward_accuracy` (share of held-out pairs with a positive implicit reward margin) ends
  above `eval_reward_accuracy_start` (its value before training), both in metrics.jsonl.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, objective={"name": "kto", "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
  )
