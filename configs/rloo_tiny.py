"""RLOO (Ahmadian et al. 2024): leave-one-out baseline, k1 KL in the reward (TRL's RLOO), PPO-clip loss.

COMMAND:
  python -m w2s_jax.main --config=configs/rloo_tiny.py:smoke --workdir=/tmp/rloo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "rloo"
  c.loss.name = "ppo"
  c.loss.reduction = "token-mean"
  c.kl.coef = 0.05
  c.kl.kind = "k1"
  c.kl.where = "reward"
  return c
