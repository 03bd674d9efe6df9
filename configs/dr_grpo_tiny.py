"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783): GRPO without its two
biases: advantages r_i − mean(r) with no std normalisation, and a per-sequence token *sum* divided by a
constant (the completion budget N = rollout.max_new_tokens, `seq-mean-token-sum-norm`) instead of the
per-sequence 1/|o_i|; PPO-clip (ε = 0.2), no KL (the paper's β = 0).

COMMAND:
  python -m w2s_jax.main --config=configs/dr_grpo_tiny.py:smoke --workdir=/tmp/dr_grpo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "dr_grpo"
  c.loss.name = "ppo"
  c.loss.reduction = "seq-mean-token-sum-norm"
  c.kl.coef = 0.0
  return c
