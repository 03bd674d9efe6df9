"""DPO of the tiny decoder on reasoning-gym preference pairs (correct vs incorrect solutions).

COMMAND:
  python -m w2s_jax.main --config=configs/dpo_tiny.py:smoke --workdir=/tmp/dpo_tiny
  python -m w2s_jax.main --config=configs/dpo_tiny.py --workdir=runs/dpo_tiny
  cDPO: --config.loss.label_smoothing=0.1
  (other losses: configs/{ipo,simpo,orpo,kto,reward_model}_tiny.py)

Reference model: the start model. DATA and EXPECTED: see `w2s_jax/train/preference_config.py`.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(arg, loss={"name": "dpo", "beta": 0.1, "label_smoothing": 0.0})
