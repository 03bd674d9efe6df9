"""SimPO (Meng et al. 2024): reference-free, length-normalised log-probs, target margin γ.

COMMAND:
  python -m w2s_jax.main --config=configs/simpo_tiny.py:smoke --workdir=/tmp/simpo_tiny
  python -m w2s_jax.main --config=configs/simpo_tiny.py --workdir=runs/simpo_tiny

Reference-free. DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, loss={"name": "simpo", "beta": 2.0, "gamma_beta_ratio": 0.5, "label_smoothing": 0.0}
  )
