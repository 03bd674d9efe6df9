"""TreeRL (arXiv 2506.11902): entropy-forked rollout trees (EPTree) with global + local process advantages.

COMMAND:
  python -m w2s_jax.main --config=configs/treerl_tiny.py:smoke --workdir=/tmp/treerl_tiny
Each prompt grows M chains, then forks its N highest −log p tokens T ways, L times
(`w2s_jax.sampling.tree.sample_tree_entropy`); the leaves are the rows (G = M + L·N·T), and every token of a
segment s gets (V(s) − V(prompt) + V(s) − V(parent s)) / sqrt(|leaves below s|)
(`w2s_jax.advantages.treerl_advantages`). Everything else is `configs/rl_base.py`.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  smoke = arg == "smoke"
  c.rollout.kind = "tree"
  t = c.rollout.tree
  # smoke: 2 chains + 1 round × 1 token × 2 forks = 4 leaves; full: 4 + 1 × 2 × 2 = 8 (TreeRL: 6, 1, 2, 2).
  t.n_roots, t.n_iters, t.top_n, t.n_forks = (2, 1, 1, 2) if smoke else (4, 1, 2, 2)
  c.rollout.group_size = t.n_roots + t.n_iters * t.top_n * t.n_forks
  c.advantage.name = "treerl"
  c.advantage.tree_weighting = "sqrt"
  c.advantage.tree_leaf_baseline = "none"
  c.loss.name = "ppo"
  c.loss.reduction = "seq-mean-token-mean"
  c.kl.coef = 0.04
  c.kl.kind = "k3"
  c.kl.where = "loss"
  return c
