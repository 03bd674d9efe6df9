"""A Bradley–Terry reward model: the tiny decoder with a zero-initialised scalar head
(`SequenceClassifier(cfg, 1)`; `--config.model.head=value` for `ValueModel`) trained on chosen/rejected pairs.

COMMAND:
  python -m w2s_jax.main --config=configs/reward_model_tiny.py:smoke --workdir=/tmp/reward_model_tiny
  python -m w2s_jax.main --config=configs/reward_model_tiny.py --workdir=runs/reward_model_tiny

Trains a reward head; the backbone starts from the start model.
DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, loss={"name": "reward_model", "center_rewards_coefficient": 0.01}, lr=1e-3, full_lr=1e-4,
    model={"head": "classifier"},
  )
