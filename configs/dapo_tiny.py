"""DAPO (Yu et al. 2025): clip-higher (0.2, 0.28), token-mean loss, dynamic sampling (drop all-correct and
all-wrong groups, refill), overlong shaping, no KL.

COMMAND:
  python -m w2s_jax.main --config=configs/dapo_tiny.py:smoke --workdir=/tmp/dapo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  c = load_config("rl_base", arg)
  c.advantage.name = "grpo"
  c.loss.name = "dapo"
  c.loss.reduction = "token-mean"
  c.dynamic_sampling.enabled = True
  c.dynamic_sampling.max_rounds = 3
  c.reward.overlong_buffer = 16 if smoke else 32
  c.kl.coef = 0.0
  return c
