"""ORPO (Hong et al. 2024): NLL of the chosen side plus β·odds-ratio term, no reference model.

COMMAND:
  python -m w2s_jax.main --config=configs/orpo_tiny.py:smoke --workdir=/tmp/orpo_tiny
  python -m w2s_jax.main --config=configs/orpo_tiny.py --workdir=runs/orpo_tiny

Reference-free. DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(arg, loss={"name": "orpo", "beta": 0.1}, lr=1e-3, full_lr=3e-5)
