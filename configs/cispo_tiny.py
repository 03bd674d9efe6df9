"""CISPO (MiniMax-M1, arXiv 2506.13585): REINFORCE weighted by the clipped importance weight with a
stop-gradient, ℓ = −sg(clip(ρ_t, 1 − ε_low, 1 + ε_high))·A·log π_θ(y_t): every token keeps its gradient
(PPO's clip drops them). No lower bound (ε_low = 1: the weight stays ≥ 0, as the paper sets ε_low large),
ε_high = 4 (a weight cap of 5, TRL/ScaleRL's recommended ε_max); group-normalised advantages, token-mean
loss over the batch (the paper normalises by the total token count), no KL.

COMMAND:
  python -m w2s_jax.main --config=configs/cispo_tiny.py:smoke --workdir=/tmp/cispo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "grpo"
  c.loss.name = "cispo"
  c.loss.clip_eps = 1.0  # weight ≥ 1 − 1 = 0: no lower bound
  c.loss.clip_eps_high = 4.0  # weight ≤ 1 + 4 = 5
  c.loss.reduction = "token-mean"
  c.kl.coef = 0.0
  return c
