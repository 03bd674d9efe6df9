"""IPO (Azar et al. 2023): squared loss on the length-averaged log-ratio margin, target 1/(2β).

COMMAND:
  python -m w2s_jax.main --config=configs/ipo_tiny.py:smoke --workdir=/tmp/ipo_tiny
  python -m w2s_jax.main --config=configs/ipo_tiny.py --workdir=runs/ipo_tiny

Reference model: the start model. DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(arg, loss={"name": "ipo", "beta": 0.1})
