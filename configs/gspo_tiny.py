"""GSPO (Zheng et al. 2025, arXiv 2507.18071): sequence-level importance ratio s = exp(mean_t log ρ_t) with
its tight clip range (1 − 3e-4, 1 + 4e-4), group-normalised advantages, one loss per sequence
(seq-mean-token-mean: (1/G) Σ_i min(s_i A_i, clip(s_i) A_i)), no KL.

COMMAND:
  python -m w2s_jax.main --config=configs/gspo_tiny.py:smoke --workdir=/tmp/gspo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y. The ratio is 1 on the first minibatch of a rollout, so the clip only acts on later
minibatches (rl_base: 2 minibatches per rollout) and epochs.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "grpo"
  c.loss.name = "gspo"
  c.loss.clip_eps = 3e-4  # GSPO paper, left and right clip ranges of s_i
  c.loss.clip_eps_high = 4e-4
  c.loss.reduction = "seq-mean-token-mean"  # the per-token values are s_i·A_i for every token of y_i
  c.kl.coef = 0.0
  return c
