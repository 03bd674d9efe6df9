"""Tree values and advantages (P2T/TEMPO, TreeRL, VinePPO) against recursive pure-Python references.

Hand-drawn trees are nested tuples: a leaf is `(name, reward)`, an internal node `(name, [children])`.
They are flattened into padded flat arrays in a shuffled node order, so the JAX code cannot rely on order.
Expected arrays were computed by hand (formulas.md §1–§3 for the worked numbers).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.advantages.group import grpo_advantages
from w2s_jax.advantages.tree import (
  gather_to_tokens,
  group_prefix_tree,
  mc_step_advantages,
  mc_step_values,
  prefix_tree_values,
  root_ids,
  tempo_advantages,
  treerl_advantages,
)

# --- hand-drawn trees -------------------------------------------------------------------------------------

# formulas.md §2: root→a→{a1:1, a2:1, a3:0}; root→b→{b1:0}.
TREE_PAPER = ("root", [("a", [("a1", 1.0), ("a2", 1.0), ("a3", 0.0)]), ("b", [("b1", 0.0)])])
# Unbalanced, depth 3: root→{x→{x1→{x1a:1, x1b:0}, x2:0}, y:1}.
TREE_UNBALANCED = ("root", [("x", [("x1", [("x1a", 1.0), ("x1b", 0.0)]), ("x2", 0.0)]), ("y", 1.0)])
# Deep and narrow: a single chain.
TREE_CHAIN = ("root", [("n1", [("n2", [("n3", [("leaf", 1.0)])])])])
# All correct / all wrong / a lone leaf.
TREE_ALL_RIGHT = ("root", [("p", [("p1", 1.0), ("p2", 1.0)]), ("q", 1.0)])
TREE_ALL_WRONG = ("root", [("p", [("p1", 0.0), ("p2", 0.0)]), ("q", 0.0)])
TREE_SINGLE = ("root", 1.0)

EXPECTED_VALUES = {
  "paper": {"root": 0.5, "a": 2 / 3, "b": 0.0, "a1": 1.0, "a2": 1.0, "a3": 0.0, "b1": 0.0},
  "unbalanced": {"root": 0.5, "x": 1 / 3, "x1": 0.5, "x1a": 1.0, "x1b": 0.0, "x2": 0.0, "y": 1.0},
}
# TreeRL R = (GA + LA) / sqrt(|L|), hand-computed.
EXPECTED_TREERL = {
  "paper": {
    "root": 0.0, "a": 0.192450, "b": -1.0, "a1": 0.833333, "a2": 0.833333, "a3": -1.166667, "b1": -0.5,
  },
  "unbalanced": {
    "root": 0.0, "x": -0.192450, "x1": 0.117851, "x1a": 1.0, "x1b": -1.0, "x2": -0.833333, "y": 1.0,
  },
}
LEAVES_UNBALANCED = {"root": 4, "x": 3, "x1": 2, "x1a": 1, "x1b": 1, "x2": 1, "y": 1}
# Leave-one-out leaf rewards on the unbalanced tree: 1 → 1 − 1/3 = 2/3, 0 → 0 − 2/3; then V(root) = 0,
# V(x) = −2/9, V(x1) = 0, V(y) = 2/3; R = GA + LA without the 1/sqrt(|L|) weighting.
EXPECTED_TREERL_LOO_NONE_UNBALANCED = {
  "root": 0.0, "x": -4 / 9, "x1": 2 / 9, "x1a": 4 / 3, "x1b": -4 / 3, "x2": -10 / 9, "y": 4 / 3,
}


def flatten(tree, pad=0, seed=0):
  """Nested tree → (names, parent_N, reward_N, valid_N) in a random node order with `pad` padding nodes."""
  names, parents, rewards = [], [], []

  def visit(node, parent):
    name, body = node
    names.append(name)
    parents.append(parent)
    rewards.append(body if not isinstance(body, list) else 0.0)
    me = len(names) - 1
    for child in body if isinstance(body, list) else []:
      visit(child, me)

  visit(tree, -1)
  n = len(names)
  perm = np.random.default_rng(seed).permutation(n)  # new index of old node k is inv[k]
  inv = np.argsort(perm)
  parent_N = np.full(n + pad, -1, np.int32)
  reward_N = np.zeros(n + pad, np.float32)
  valid_N = np.zeros(n + pad, bool)
  for k in range(n):
    parent_N[inv[k]] = -1 if parents[k] < 0 else inv[parents[k]]
    reward_N[inv[k]] = rewards[k]
    valid_N[inv[k]] = True
  reward_N[n:] = 7.0  # padding garbage must not leak
  return [names[p] for p in perm], parent_N, reward_N, valid_N


def ref_tree(tree):
  """Recursive reference: {name: (value, leaves, treerl_R)} in the paper form."""
  out = {}

  def leaves(node):
    name, body = node
    return [body] if not isinstance(body, list) else [r for c in body for r in leaves(c)]

  def visit(node, parent_value, root_value):
    name, body = node
    rs = leaves(node)
    v = float(np.mean(rs))
    root_value = v if root_value is None else root_value
    r = 0.0 if parent_value is None else ((v - root_value) + (v - parent_value)) / np.sqrt(len(rs))
    out[name] = (v, len(rs), r)
    for child in body if isinstance(body, list) else []:
      visit(child, v, root_value)

  visit(tree, None, None)
  return out


def by_name(names, arr):
  return {name: float(arr[i]) for i, name in enumerate(names)}


def assert_named(names, arr, expected, atol=1e-5):
  got = by_name(names, arr)
  for k, v in expected.items():
    assert got[k] == pytest.approx(v, abs=atol), k


ALL_TREES = {
  "paper": TREE_PAPER, "unbalanced": TREE_UNBALANCED, "chain": TREE_CHAIN,
  "all_right": TREE_ALL_RIGHT, "all_wrong": TREE_ALL_WRONG, "single": TREE_SINGLE,
}


N_PAD = 16  # every hand-drawn tree is padded to this many nodes, so each function compiles once

values_fn = jax.jit(lambda p, r, v: prefix_tree_values(p, r, valid_N=v))
full_values_fn = jax.jit(
  lambda p, r, v, leaf, w: prefix_tree_values(p, r, valid_N=v, is_leaf_N=leaf, weight_N=w)
)
_treerl_jit = jax.jit(treerl_advantages, static_argnames=("weighting", "leaf_baseline"))


def treerl_fn(parent_N, reward_N, *, valid_N, global_weight=1.0, local_weight=1.0, **static):
  """Jitted TreeRL; the weights are always passed as traced arrays, so they share one compile."""
  weights = {"global_weight": np.float32(global_weight), "local_weight": np.float32(local_weight)}
  return _treerl_jit(parent_N, reward_N, valid_N=valid_N, **weights, **static)


def padded(key, seed=0):
  names, *arrays = flatten(ALL_TREES[key], seed=seed)
  return (names, *flatten(ALL_TREES[key], pad=N_PAD - len(names), seed=seed)[1:])


# --- prefix_tree_values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["paper", "unbalanced"])
def test_values_hand_computed(key):
  names, parent_N, reward_N, valid_N = padded(key)
  values_N, leaves_N = values_fn(parent_N, reward_N, valid_N)
  assert_named(names, values_N, EXPECTED_VALUES[key])
  assert np.all(np.asarray(values_N)[~valid_N] == 0) and np.all(np.asarray(leaves_N)[~valid_N] == 0)


@pytest.mark.parametrize("key", sorted(ALL_TREES))
def test_values_and_treerl_match_recursive_reference(key):
  names, parent_N, reward_N, valid_N = padded(key, seed=1)
  values_N, leaves_N = values_fn(parent_N, reward_N, valid_N)
  adv_N = treerl_fn(parent_N, reward_N, valid_N=valid_N)
  ref = ref_tree(ALL_TREES[key])
  assert_named(names, values_N, {k: v for k, (v, _, _) in ref.items()})
  assert_named(names, leaves_N, {k: n for k, (_, n, _) in ref.items()})
  assert_named(names, adv_N, {k: r for k, (_, _, r) in ref.items()})
  if key in ("chain", "all_right", "all_wrong", "single"):  # no contrast between leaves: no advantage
    np.testing.assert_allclose(adv_N, 0.0, atol=1e-7)


def random_tree(rng, n, pad):
  parent = np.array([-1] + [int(rng.integers(0, k)) for k in range(1, n)])
  perm = rng.permutation(n)
  inv = np.argsort(perm)
  parent_N = np.full(n + pad, -1, np.int32)
  parent_N[inv] = np.where(parent >= 0, inv[np.maximum(parent, 0)], -1)
  reward_N = rng.integers(0, 2, n + pad).astype(np.float32)
  valid_N = np.arange(n + pad) < n
  return parent_N, reward_N, valid_N


def test_value_is_leaf_count_weighted_mean_of_children():
  rng = np.random.default_rng(0)
  trees = [random_tree(rng, 13, 3) for _ in range(6)]
  batch = [np.stack(a) for a in zip(*trees)]
  values_BN, leaves_BN = map(np.asarray, jax.jit(jax.vmap(values_fn))(*batch))
  for (parent_N, reward_N, valid_N), values_N, leaves_N in zip(trees, values_BN, leaves_BN):
    kids = {i: [] for i in range(len(parent_N))}
    for i, p in enumerate(parent_N):
      if valid_N[i] and p >= 0:
        kids[int(p)].append(i)
    for i in np.flatnonzero(valid_N):
      c = kids[i]
      if c:
        assert leaves_N[i] == leaves_N[c].sum()
        assert values_N[i] == pytest.approx((leaves_N[c] * values_N[c]).sum() / leaves_N[c].sum(), abs=1e-6)
      else:
        assert leaves_N[i] == 1 and values_N[i] == reward_N[i]
    assert np.all(values_N[~valid_N] == 0)


def test_forest_and_leaf_weights():
  names_a, parent_a, reward_a, _ = flatten(TREE_PAPER, seed=2)
  names_b, parent_b, reward_b, _ = flatten(TREE_UNBALANCED, seed=3)
  # A forest: tree b behind tree a in one array, then padding; each tree keeps its own root.
  n_a, n_b, pad = len(names_a), len(names_b), N_PAD - len(names_a) - len(names_b)
  parent_N = np.concatenate([parent_a, np.where(parent_b >= 0, parent_b + n_a, -1), np.full(pad, -1)])
  reward_N = np.concatenate([reward_a, reward_b, np.full(pad, 7.0)]).astype(np.float32)
  valid_N = np.arange(N_PAD) < n_a + n_b
  values_N, _ = values_fn(parent_N, reward_N, valid_N)
  adv_N = treerl_fn(parent_N, reward_N, valid_N=valid_N)
  assert_named(names_a, values_N[:n_a], EXPECTED_VALUES["paper"])
  assert_named(names_b, values_N[n_a:], EXPECTED_VALUES["unbalanced"])
  assert_named(names_a, adv_N[:n_a], EXPECTED_TREERL["paper"])
  assert_named(names_b, adv_N[n_a:], EXPECTED_TREERL["unbalanced"])
  roots = [names_a.index("root")] * n_a + [n_a + names_b.index("root")] * n_b
  np.testing.assert_array_equal(jax.jit(root_ids)(parent_N)[valid_N], roots)
  names_a, parent_a, reward_a, valid_a = padded("paper", seed=2)
  # Leaf weights: leaf a3 counted twice gives V(a) = 2/4 and V(root) = 2/5.
  w_N = np.ones(N_PAD, np.float32)
  w_N[names_a.index("a3")] = 2.0
  is_leaf_N = np.array([n in ("a1", "a2", "a3", "b1") for n in names_a] + [False] * (N_PAD - len(names_a)))
  vw, lw = full_values_fn(parent_a, reward_a, valid_a, is_leaf_N, w_N)
  assert_named(names_a, vw, {"a": 0.5, "root": 0.4, "a3": 0.0})
  assert_named(names_a, lw, {"a": 4.0, "root": 5.0, "a3": 2.0})


def test_explicit_is_leaf_and_internal_outcomes():
  names, parent_N, reward_N, valid_N = padded("unbalanced", seed=6)
  ones_N = np.ones(N_PAD, np.float32)
  is_leaf_N = np.array([n in ("x1a", "x1b", "x2", "y") for n in names] + [False] * (N_PAD - len(names)))
  got, _ = full_values_fn(parent_N, reward_N, valid_N, is_leaf_N, ones_N)
  assert_named(names, got, EXPECTED_VALUES["unbalanced"])
  # Marking x1 as carrying an outcome too (a response that ends at x1, reward 0 there): V(x1) = 1/3,
  # V(x) = 1/4, V(root) = 2/5.
  is_leaf_N[names.index("x1")] = True
  got, leaves = full_values_fn(parent_N, reward_N, valid_N, is_leaf_N, ones_N)
  assert_named(names, got, {"x1": 1 / 3, "x": 1 / 4, "root": 2 / 5, "y": 1.0})
  assert_named(names, leaves, {"x1": 3.0, "x": 4.0, "root": 5.0})


def test_root_ids():
  parent_N = np.array([-1, 0, 1, 2, 3, -1, 5, 2, -1] + [-1] * (N_PAD - 9))
  np.testing.assert_array_equal(jax.jit(root_ids)(parent_N)[:9], [0, 0, 0, 0, 0, 5, 5, 0, 8])


# --- TreeRL -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["paper", "unbalanced"])
def test_treerl_hand_computed(key):
  names, parent_N, reward_N, valid_N = padded(key, seed=4)
  adv_N = treerl_fn(parent_N, reward_N, valid_N=valid_N)
  assert_named(names, adv_N, EXPECTED_TREERL[key])
  assert np.all(np.asarray(adv_N)[~valid_N] == 0)


def test_treerl_options():
  names, parent_N, reward_N, valid_N = padded("unbalanced", seed=5)
  # Leave-one-out leaf baseline without the 1/sqrt(|L|) weighting (one compile covers both options).
  loo = treerl_fn(parent_N, reward_N, valid_N=valid_N, leaf_baseline="loo", weighting="none")
  assert_named(names, loo, EXPECTED_TREERL_LOO_NONE_UNBALANCED)
  # Local term only: LA / sqrt(|L|) with LA = V(s) − V(parent); global only: GA / sqrt(|L|).
  local = treerl_fn(parent_N, reward_N, valid_N=valid_N, global_weight=0.0)
  la = {"x": 1 / 3 - 0.5, "x1": 0.5 - 1 / 3, "x2": -1 / 3, "x1b": -0.5, "y": 0.5, "root": 0.0}
  assert_named(names, local, {k: v / np.sqrt(LEAVES_UNBALANCED[k]) for k, v in la.items()})
  glob = treerl_fn(parent_N, reward_N, valid_N=valid_N, local_weight=0.0)
  ga = {k: v - 0.5 for k, v in EXPECTED_VALUES["unbalanced"].items() if k != "root"}
  assert_named(names, glob, {k: v / np.sqrt(LEAVES_UNBALANCED[k]) for k, v in ga.items()})
  with pytest.raises(ValueError, match="weighting"):
    treerl_advantages(parent_N, reward_N, weighting="linear")
  with pytest.raises(ValueError, match="leaf_baseline"):
    treerl_advantages(parent_N, reward_N, leaf_baseline="mean")


def test_gather_to_tokens():
  adv_N = np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
  ids_BL = np.array([[1, 1, 2, -1], [0, 2, -1, -1]])
  np.testing.assert_allclose(jax.jit(gather_to_tokens)(adv_N, ids_BL), [[1, 1, 2, 0], [5, 7, 0, 0]])
  # one tree shared by a batch of token rows
  np.testing.assert_allclose(jax.jit(gather_to_tokens)(adv_N[1], ids_BL), [[6, 6, 7, 0], [5, 7, 0, 0]])


# --- TEMPO ------------------------------------------------------------------------------------------------

A, B, C, D, E, F = 1, 2, 3, 4, 5, 6
END = "<end>"
L_PAD = 6  # every group is padded to this length
G_RAND = 4  # random groups have the size of the hand-drawn ones
P_BATCH = 8  # prompts per TEMPO call


@functools.partial(jax.jit, static_argnames=("root_td", "normalize"))
def _tempo_batch_jit(tokens_PGL, mask_PGL, rewards_PG, td_weight, *, root_td, normalize):
  f = functools.partial(tempo_advantages, root_td=root_td, td_weight=td_weight, normalize=normalize)
  return jax.vmap(f)(tokens_PGL, mask_PGL, rewards_PG)


def tempo_batch(tokens_PGL, mask_PGL, rewards_PG, root_td=False, td_weight=1.0, normalize=True):
  """TEMPO on a batch of P prompts (vmap), jitted once per (shape, root_td, normalize); td_weight traced."""
  return _tempo_batch_jit(
    tokens_PGL, mask_PGL, rewards_PG, np.float32(td_weight), root_td=root_td, normalize=normalize
  )


def tempo(seqs, rewards, **kw):
  """TEMPO on one group, run as a batch of P identical groups so that it shares the batch's compile."""
  tokens, mask = pad_group(seqs)
  rewards = np.asarray(rewards, np.float32)
  tile = lambda x: np.repeat(x[None], P_BATCH, axis=0)
  return np.asarray(tempo_batch(tile(tokens), tile(mask), tile(rewards), **kw)[0])


def pad_group(seqs, length=L_PAD):
  tokens = np.full((len(seqs), length), 99, np.int32)  # padding garbage must not matter
  mask = np.zeros((len(seqs), length), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, : len(s)] = s
    mask[i, : len(s)] = 1
  return tokens, mask


def ref_tempo(seqs, rewards, *, root_td, td_weight=1.0, normalize=True, eps=1e-6):
  """Recursive-trie reference with explicit children sets. The end of a response is a token; its edge's
  TD term goes to the response's last real token. Without `root_td`, the root's own branch has no TD."""
  g = len(seqs)
  r = np.asarray(rewards, np.float64)
  std = r.std(ddof=1) if g > 1 else 0.0
  scale = std + eps if normalize else 1.0
  ext = [tuple(s) + (END,) for s in seqs]
  members = lambda p: [j for j in range(g) if ext[j][: len(p)] == p]
  value = lambda p: r[members(p)].mean()
  branches = lambda p: len({ext[j][len(p)] for j in members(p)}) >= 2
  out = []
  for i, s in enumerate(seqs):
    row = []
    for t in range(len(s)):
      edges = [t, t + 1] if t == len(s) - 1 else [t]
      td = 0.0
      for u in edges:
        before, after = ext[i][:u], ext[i][: u + 1]
        if branches(before) and (root_td or u > 0):
          td += value(after) - value(before)
      row.append((r[i] - r.mean()) / scale + td_weight * td / scale)
    out.append(row)
  return out


def assert_rows(adv_GL, rows, atol=1e-5):
  adv_GL = np.asarray(adv_GL)
  for i, row in enumerate(rows):
    np.testing.assert_allclose(adv_GL[i, : len(row)], row, atol=atol)
    assert np.all(adv_GL[i, len(row) :] == 0)


FORMULAS_GROUP = ([[A, B, C], [A, B, D], [A, E], [F]], [1.0, 0.0, 1.0, 0.0])


def test_tempo_formulas_worked_example():
  adv = tempo(*FORMULAS_GROUP, root_td=True)
  expected = [
    [1.154701, 0.577350, 1.732051], [-0.577350, -1.154701, -1.732051], [1.154701, 1.443376], [-1.732051],
  ]
  assert_rows(adv, expected)
  # Default (the root's branch left to the GRPO term): only the first tokens change, to r̃ = ±0.866025.
  adv = tempo(*FORMULAS_GROUP)
  expected = [
    [0.866025, 0.577350, 1.732051], [-0.866025, -1.154701, -1.732051], [0.866025, 1.443376], [-0.866025],
  ]
  assert_rows(adv, expected)


def test_tempo_duplicates_and_a_response_that_is_a_prefix_of_another():
  # o1 = o2 = AB (r 1, 0), o3 = ABC (r 1), o4 = D (r 0). By hand: V(A) = V(AB) = 2/3, V(AB·end) = 1/2,
  # V(ABC·end) = 1. B ends o1, o2 (TD −1/6), B continues o3 (no branch), C ends o3 (TD +1/3); / std 0.57735.
  adv = tempo([[A, B], [A, B], [A, B, C], [D]], [1.0, 0.0, 1.0, 0.0])
  expected = [[0.866025, 0.577350], [-0.866025, -1.154701], [0.866025, 0.866025, 1.443376], [-0.866025]]
  assert_rows(adv, expected)
  # A one-token response that is a prefix of another: its end edge branches even without the root's TD.
  adv = tempo([[A], [A, B], [C], [D]], [1.0, 0.0, 0.0, 0.0])
  # V(A) = 1/2, V(A·end) = 1, V(AB·end) = 0; std 0.5.
  assert_rows(adv, [[1.5 + 1.0], [-0.5, -0.5 - 1.0], [-0.5], [-0.5]], atol=1e-4)


def random_group(rng, g, vocab, distinct_first=False, length=L_PAD):
  seqs = []
  for i in range(g):
    s = [int(x) for x in rng.integers(1, vocab + 1, int(rng.integers(1, length + 1)))]
    if distinct_first:
      s[0] = 10 + i
    seqs.append(s)
  return seqs


def random_groups(seed, p=P_BATCH, g=G_RAND, vocab=2, **kw):
  rng = np.random.default_rng(seed)
  groups = [random_group(rng, g, vocab, **kw) for _ in range(p)]
  for k, seqs in enumerate(groups[: p // 2]):  # force duplicates and strict prefixes in half of them
    seqs[1] = list(seqs[0])
    seqs[2] = list(seqs[0][:-1]) or [seqs[0][0], k + 1]
  rewards = rng.integers(0, 2, (p, g)).astype(np.float32)
  tokens, mask = map(np.stack, zip(*[pad_group(s) for s in groups]))
  return groups, tokens, mask, rewards


TEMPO_OPTIONS = [{"root_td": False}, {"root_td": True}, {"td_weight": 0.5, "normalize": False}]


@pytest.mark.parametrize("kw", TEMPO_OPTIONS)
def test_tempo_matches_recursive_trie(kw):
  for seed in (1, 2):
    groups, tokens, mask, rewards = random_groups(seed)
    adv = tempo_batch(tokens, mask, rewards, **kw)
    for k, seqs in enumerate(groups):
      assert_rows(adv[k], ref_tempo(seqs, rewards[k], **{"root_td": False, **kw}))


def grpo_reference(rewards, eps=1e-6):
  r = np.asarray(rewards, np.float64)
  return (r - r.mean()) / (r.std(ddof=1) + eps)


def test_tempo_equals_grpo_without_shared_first_token():
  rng = np.random.default_rng(0)
  groups = [random_group(rng, G_RAND, 3, distinct_first=True) for _ in range(P_BATCH)]
  tokens, mask = map(np.stack, zip(*[pad_group(s) for s in groups]))
  rewards = rng.normal(size=(P_BATCH, G_RAND)).astype(np.float32)
  rewards[0] = [1.0, 0.0, 0.0, 1.0]
  adv = np.asarray(tempo_batch(tokens, mask, rewards))
  library_grpo = np.asarray(jax.jit(grpo_advantages)(rewards))  # w2s_jax.advantages.group, [P, G]
  for k in range(P_BATCH):
    expected = np.where(mask[k] > 0, grpo_reference(rewards[k])[:, None], 0.0)
    np.testing.assert_allclose(adv[k], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(adv[k], np.where(mask[k] > 0, library_grpo[k][:, None], 0.0), atol=1e-6)
    # token for token the group term: no TD term leaks in
    assert np.all(adv[k][mask[k] > 0] == np.repeat(adv[k][:, :1], L_PAD, 1)[mask[k] > 0])


def test_tempo_td_telescopes_with_root_td():
  # Σ_t TD_{i,t} = (V(leaf_i) − V(root)) / std, where the leaf is shared by identical responses.
  groups, tokens, mask, rewards = random_groups(3)
  adv = np.asarray(tempo_batch(tokens, mask, rewards, root_td=True))
  for k, seqs in enumerate(groups):
    r = rewards[k].astype(np.float64)
    scale = r.std(ddof=1) + 1e-6
    leaf = np.array([r[[j for j in range(G_RAND) if seqs[j] == s]].mean() for s in seqs])
    td_sum = (adv[k] - ((r - r.mean()) / scale)[:, None] * mask[k]).sum(-1)
    np.testing.assert_allclose(td_sum, (leaf - r.mean()) / scale, atol=1e-5)


def test_tempo_edge_cases():
  seqs, rewards = FORMULAS_GROUP
  for r in (1.0, 0.0, 0.7):  # all rewards equal: no signal at all, exactly
    np.testing.assert_array_equal(tempo(seqs, [r] * 4, root_td=True), 0.0)
  np.testing.assert_array_equal(tempo(seqs[:1], [1.0], root_td=True), 0.0)  # a group of one
  # All identical responses: the GRPO term only.
  adv = tempo([seqs[0]] * 4, [1.0, 0.0, 1.0, 1.0], root_td=True)
  np.testing.assert_allclose(adv[:, :3], np.repeat(grpo_reference([1, 0, 1, 1])[:, None], 3, 1), atol=1e-6)
  # td_weight = 0 is GRPO on any group.
  tokens, mask = pad_group(seqs)
  adv = tempo(seqs, rewards, td_weight=0.0, root_td=True)
  np.testing.assert_allclose(adv, grpo_reference(rewards)[:, None] * mask, atol=1e-6)


def test_tempo_permutation_equivariant():
  groups, tokens, mask, rewards = random_groups(4)
  perm = np.array([2, 0, 3, 1])
  adv = tempo_batch(tokens, mask, rewards)
  permuted = tempo_batch(tokens[:, perm], mask[:, perm], rewards[:, perm])
  np.testing.assert_allclose(permuted, np.asarray(adv)[:, perm], atol=1e-6)


def test_tempo_jit_equals_eager():
  # Pure: eager (op-by-op) and jitted runs agree.
  seqs, rewards = FORMULAS_GROUP
  tokens, mask = pad_group(seqs)
  rewards = np.asarray(rewards, np.float32)
  eager = tempo_advantages(tokens, mask, rewards, root_td=True)
  jitted = tempo(seqs, rewards, root_td=True)
  np.testing.assert_allclose(eager, jitted, atol=1e-6)


def test_group_prefix_tree_gives_the_same_values():
  seqs = [[A, B, C], [A, B, D], [A, E], [F], [A, B, C], [A, B]]
  rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], np.float32)
  tokens, mask = pad_group(seqs)

  @jax.jit
  def values_via_tree(tokens, mask, rewards):
    tree = group_prefix_tree(tokens, mask)
    n = tree["parent_N"].shape[0]
    count_N = jax.ops.segment_sum(jnp.ones_like(rewards), tree["end_G"], n)
    reward_N = jax.ops.segment_sum(rewards, tree["end_G"], n) / jnp.maximum(count_N, 1)
    values_N, leaves_N = prefix_tree_values(
      tree["parent_N"], reward_N, is_leaf_N=tree["is_leaf_N"], valid_N=tree["valid_N"], weight_N=count_N
    )
    return tree, values_N, leaves_N

  tree, values_N, leaves_N = jax.tree.map(np.asarray, values_via_tree(tokens, mask, rewards))
  assert tree["parent_N"].shape == (1 + 6 * (L_PAD + 1),)
  # 1 root + prefixes A, AB, ABC, ABD, AE, F + ends ABC·, ABD·, AE·, F·, AB· = 12 nodes, 5 leaves.
  assert tree["valid_N"].sum() == 12 and tree["is_leaf_N"].sum() == 5
  node_GL = tree["node_GL"]
  for i, s in enumerate(seqs):
    for t in range(len(s)):
      through = [j for j in range(6) if seqs[j][: t + 1] == s[: t + 1]]
      assert leaves_N[node_GL[i, t]] == len(through)
      assert values_N[node_GL[i, t]] == pytest.approx(rewards[through].mean(), abs=1e-6)
      parent = tree["parent_N"][node_GL[i, t]]
      assert parent == (0 if t == 0 else node_GL[i, t - 1])
    assert np.all(node_GL[i, len(s) :] == -1)
    assert tree["parent_N"][tree["end_G"][i]] == node_GL[i, len(s) - 1]
  assert values_N[0] == pytest.approx(rewards.mean(), abs=1e-6)
  assert values_N[tree["end_G"][0]] == pytest.approx(0.5, abs=1e-6)  # ABC· is shared by o1 (1) and o5 (0)
  assert tree["end_G"][0] == tree["end_G"][4]


# --- VinePPO ----------------------------------------------------------------------------------------------

mc_values_fn = jax.jit(mc_step_values)
mc_adv_fn = jax.jit(mc_step_advantages)  # gamma is traced


def test_vineppo_worked_examples():
  returns_SK = np.zeros((3, 9), np.float32)
  for i, c in enumerate([4, 6, 8]):
    returns_SK[i, :c] = 1.0
  values_S = mc_values_fn(returns_SK)
  np.testing.assert_allclose(values_S, [4 / 9, 6 / 9, 8 / 9], atol=1e-6)
  rewards_S = np.array([0.0, 0.0, 1.0])
  adv_S, filled_S = mc_adv_fn(values_S, rewards_S, known_S=np.ones(3, bool), gamma=1.0)
  np.testing.assert_allclose(adv_S, [0.222222, 0.222222, 0.111111], atol=1e-6)
  np.testing.assert_allclose(filled_S, values_S, atol=1e-7)
  adv_S, filled_S = mc_adv_fn(values_S, rewards_S, known_S=np.array([True, False, False]), gamma=1.0)
  np.testing.assert_allclose(filled_S, [0.444444, 1.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(adv_S, [0.555556, 0.0, 0.0], atol=1e-6)


def ref_vineppo(values, rewards, known, steps, gamma):
  n = int(sum(steps))
  v = [0.0] * (n + 1)
  for i in reversed(range(n)):
    v[i] = values[i] if known[i] else rewards[i] + gamma * v[i + 1]
  adv = [rewards[i] + gamma * v[i + 1] - v[i] for i in range(n)]
  pad = [0.0] * (len(values) - n)
  return adv + pad, v[:n] + pad


def test_vineppo_matches_reference_with_padding_and_masks():
  rng = np.random.default_rng(5)
  b, s, k = 4, 6, 5
  returns = rng.integers(0, 2, (b, s, k)).astype(np.float32)
  rollout_mask = rng.random((b, s, k)) < 0.7
  rollout_mask[0, 2] = False  # a step with no rollout gets V = 0, as VinePPO's `_compute_mc_value`
  values = np.asarray(mc_values_fn(returns, rollout_mask))
  assert values[0, 2] == 0.0
  row = [returns[1, i][rollout_mask[1, i]].mean() if rollout_mask[1, i].any() else 0 for i in range(s)]
  np.testing.assert_allclose(values[1], row, atol=1e-6)
  steps = np.arange(s)[None] < np.array([6, 3, 1, 4])[:, None]
  rewards = np.where(steps, rng.normal(size=(b, s)), 0.0).astype(np.float32)
  known = rng.random((b, s)) < 0.6
  for gamma in (1.0, 0.9):
    adv, filled = mc_adv_fn(values, rewards, known_S=known, step_mask_S=steps, gamma=gamma)
    for i in range(b):
      ref_adv, ref_v = ref_vineppo(values[i], rewards[i], known[i], steps[i], gamma)
      np.testing.assert_allclose(adv[i], ref_adv, atol=1e-5)
      np.testing.assert_allclose(filled[i], ref_v, atol=1e-5)
  # γ = 1, all values known: the advantages telescope to (sum of rewards) − V(query).
  adv, _ = mc_adv_fn(values, rewards, known_S=np.ones_like(known), step_mask_S=steps, gamma=1.0)
  np.testing.assert_allclose(np.sum(adv, -1), rewards.sum(-1) - values[:, 0], atol=1e-5)
