"""Rejection-sampling SFT (RAFT / STaR): sample G per prompt, keep the verified-correct completions, SFT on
them (A = 1, REINFORCE loss, token-mean) through the same rollout path.

COMMAND:
  python -m w2s_jax.main --config=configs/rft_tiny.py:smoke --workdir=/tmp/rft_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "rft"
  c.loss.name = "reinforce"
  c.loss.reduction = "token-mean"
  c.kl.coef = 0.0
  return c
