"""TEMPO / Prefix-to-Tree (arXiv 2509.18314): GRPO on the group's prefix tree plus branch-gated TD terms.

COMMAND:
  python -m w2s_jax.main --config=configs/tempo_tiny.py:smoke --workdir=/tmp/tempo_tiny
Same rollouts and loss as `configs/grpo_tiny.py`; only the advantage differs: where responses of a group
share a prefix and then branch, each branch token gets (V(after) − V(before)) / std of the group's rewards
on top of GRPO's r̃_i (`w2s_jax.advantages.tempo_advantages`). With no shared prefix it is exactly GRPO.
Everything else is `configs/rl_base.py`; override any key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "tempo"
  c.advantage.td_weight = 1.0
  c.advantage.root_td = False
  c.loss.name = "ppo"
  c.loss.reduction = "seq-mean-token-mean"
  c.kl.coef = 0.04
  c.kl.kind = "k3"
  c.kl.where = "loss"
  return c
