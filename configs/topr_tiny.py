"""TOPR (Le Roux et al. 2025): tapered off-policy REINFORCE, batch-mean baseline, sequence-level truncated
importance weights on negative samples, per-sample (seq-mean-token-sum) loss, no KL.

COMMAND:
  python -m w2s_jax.main --config=configs/topr_tiny.py:smoke --workdir=/tmp/topr_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "reinforce"
  c.loss.name = "topr"
  c.loss.topr_level = "sequence"
  c.loss.reduction = "seq-mean-token-sum"
  c.kl.coef = 0.0
  return c
