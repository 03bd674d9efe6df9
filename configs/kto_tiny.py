"""KTO (Ethayarajh et al. 2024) on UNPAIRED examples: correct solutions desirable, incorrect undesirable,
with TRL's KL reference point from mismatched prompt/completion rows.

COMMAND:
  python -m w2s_jax.main --config=configs/kto_tiny.py:smoke --workdir=/tmp/kto_tiny
  python -m w2s_jax.main --config=configs/kto_tiny.py --workdir=runs/kto_tiny

Reference model: the start model; train examples are unpaired (every scored completion is one).
DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, loss={"name": "kto", "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
  )
