"""Tree estimators in the RL loop: TEMPO, TreeRL and VinePPO against pure-Python references, the tree
rollouts on a real (tiny random) model, and the three smoke configs end to end through the entry point."""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import ROOT, run_main
from tests.sampling.conftest import random_model
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models import get_preset
from w2s_jax.rl.batch import compute_advantages, treerl_token_advantages, vineppo_token_advantages
from w2s_jax.rl.rollout import RewardConfig, encode_prompts, sample_groups
from w2s_jax.rl.tree_rollout import KeepStateSampler, mc_step_returns, sample_tree_rollout, step_starts
from w2s_jax.sampling import Sampler, SamplingConfig

# ------------------------------------------------------------------------------------------------
# Pure-Python references (recursive, no arrays).
# ------------------------------------------------------------------------------------------------


def _std(xs):
  m = sum(xs) / len(xs)
  return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def tempo_ref(seqs, rewards, root_td=False, eps=1e-6):
  """TEMPO on the trie of `seqs` (lists of tokens), the end of a response counted as a token."""
  if max(rewards) == min(rewards):
    return [[0.0] * len(s) for s in seqs]
  mean, scale = sum(rewards) / len(rewards), _std(rewards) + eps
  ext = [tuple(s) + ("END",) for s in seqs]

  def members(prefix):
    return [j for j, e in enumerate(ext) if e[: len(prefix)] == prefix]

  def value(prefix):
    d = members(prefix)
    return sum(rewards[j] for j in d) / len(d)

  def branches(prefix):
    return len({ext[j][len(prefix)] for j in members(prefix)}) >= 2

  out = []
  for i, s in enumerate(seqs):
    row = []
    for t in range(len(s)):
      edges = [(ext[i][:t], ext[i][: t + 1])]
      if t == len(s) - 1:
        edges.append((ext[i][: t + 1], ext[i][: t + 2]))
      td = sum(value(b) - value(a) for a, b in edges if branches(a) and (root_td or len(a) > 0))
      row.append((rewards[i] - mean) / scale + td / scale)
    out.append(row)
  return out


def treerl_ref(parent, reward, leaves, weighting="sqrt", loo=False):
  """TreeRL advantage of every node of one tree rooted at node 0, recursively."""
  children = {n: [c for c, p in enumerate(parent) if p == n] for n in range(len(parent))}
  r = dict(reward)
  if loo and len(leaves) > 1:
    r = {x: reward[x] - sum(reward[o] for o in leaves if o != x) / (len(leaves) - 1) for x in leaves}

  def below(n):
    return [n] if n in leaves else [x for c in children[n] for x in below(c)]

  def value(n):
    return sum(r[x] for x in below(n)) / len(below(n))

  adv = {}
  for n in range(1, len(parent)):
    a = (value(n) - value(0)) + (value(n) - value(parent[n]))
    adv[n] = a / math.sqrt(len(below(n))) if weighting == "sqrt" else a
  return adv


# ------------------------------------------------------------------------------------------------
# TEMPO
# ------------------------------------------------------------------------------------------------


def _pad(seqs, n):
  tokens = np.zeros((len(seqs), n), np.int32)
  mask = np.zeros((len(seqs), n), bool)
  for i, s in enumerate(seqs):
    tokens[i, : len(s)], mask[i, : len(s)] = s, True
  return tokens, mask


def test_tempo_in_the_loop_equals_grpo_without_shared_prefixes():
  # Two prompts × G = 4, every response of a group starts with a different token; a third, padding group.
  seqs = [[1, 2, 3], [2, 2], [3, 9, 9, 9], [4], [5, 1], [6, 1, 1], [7], [8, 8], [1], [1], [2], [3]]
  rewards = np.array([1, 0, 0, 1, 0.5, 0.0, 1.0, 0.25, 1, 0, 1, 0], np.float32)
  valid = np.array([1] * 8 + [0] * 4, np.float32)
  tokens, mask = _pad(seqs, 5)
  kw = dict(group_valid_R=valid, grpo_eps=1e-6)
  tempo, _ = compute_advantages("tempo", rewards, mask, 4, tokens_RN=tokens, **kw)
  grpo, _ = compute_advantages("grpo", rewards, mask, 4, **kw)
  np.testing.assert_allclose(tempo, grpo, atol=1e-6)
  # and both equal the hand-computed GRPO values: group 1 r = [1, 0, 0, 1], mean 0.5, std 0.57735
  np.testing.assert_allclose(tempo[0, :3], 0.866025, atol=1e-5)
  np.testing.assert_allclose(tempo[1, :2], -0.866025, atol=1e-5)
  assert (tempo[8:] == 0).all() and (tempo[~mask] == 0).all()


@pytest.mark.parametrize("root_td", [False, True])
def test_tempo_in_the_loop_matches_the_recursive_reference(root_td):
  A, B, C, D, E, F = 11, 12, 13, 14, 15, 16
  groups = [
    ([[A, B, C], [A, B, D], [A, E], [F]], [1.0, 0.0, 1.0, 0.0]),  # formulas.md §1's worked example
    ([[A, B], [A, B], [A, B, C], [A]], [1.0, 0.0, 1.0, 0.0]),  # duplicates and strict prefixes
  ]
  seqs = [s for g, _ in groups for s in g]
  rewards = np.array([r for _, rs in groups for r in rs], np.float32)
  tokens, mask = _pad(seqs, 4)
  adv, _ = compute_advantages("tempo", rewards, mask, 4, tokens_RN=tokens, root_td=root_td)
  for b, (g, rs) in enumerate(groups):
    for i, row in enumerate(tempo_ref(g, rs, root_td=root_td)):
      np.testing.assert_allclose(adv[4 * b + i, : len(row)], row, atol=1e-5)
  if root_td:  # the worked example's printed numbers
    np.testing.assert_allclose(adv[0, :3], [1.154701, 0.577350, 1.732051], atol=1e-5)
    np.testing.assert_allclose(adv[2, :2], [1.154701, 1.443376], atol=1e-5)
    np.testing.assert_allclose(adv[3, :1], [-1.732051], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# TreeRL
# ------------------------------------------------------------------------------------------------


def _random_tree(rng, n_nodes):
  parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n_nodes)]
  leaves = [n for n in range(1, n_nodes) if n not in parent]
  span = {n: int(rng.integers(1, 4)) for n in range(1, n_nodes)}
  return parent, leaves, span


def _path(parent, n):
  out = []
  while n > 0:
    out.append(n)
    n = parent[n]
  return out[::-1]


@pytest.mark.parametrize("weighting,loo", [("sqrt", False), ("none", False), ("sqrt", True)])
def test_treerl_token_advantages_match_the_recursive_reference(weighting, loo):
  rng = np.random.default_rng(3)
  # Prompt 0: formulas.md §2's tree root→a→{a1:1, a2:1, a3:0}, root→b→{b1:0}; prompt 1: a random tree.
  trees = [([-1, 0, 0, 1, 1, 1, 2], [3, 4, 5, 6], {1: 2, 2: 1, 3: 3, 4: 3, 5: 3, 6: 2}),
           _random_tree(rng, 12)]
  rewards = [{3: 1.0, 4: 1.0, 5: 0.0, 6: 0.0}, {x: float(rng.integers(0, 2)) for x in trees[1][1]}]
  G, M, N = max(len(t[1]) for t in trees) + 1, 16, 24  # at least one padding row per prompt
  parent_BM, valid_BM = np.full((2, M), -1), np.zeros((2, M), bool)
  leaf_R, node_RN = np.full(2 * G, -1), np.full((2 * G, N), -1)
  r_R, valid_R = np.zeros(2 * G), np.zeros(2 * G)
  for b, (parent, leaves, span) in enumerate(trees):
    parent_BM[b, : len(parent)], valid_BM[b, : len(parent)] = parent, True
    for k, leaf in enumerate(leaves):
      row = b * G + k
      ids = [n for n in _path(parent, leaf) for _ in range(span[n])]
      node_RN[row, : len(ids)], leaf_R[row], r_R[row], valid_R[row] = ids, leaf, rewards[b][leaf], 1
  r_R[G - 1] = 5.0  # a padding row's reward must be ignored
  adv = treerl_token_advantages(parent_BM, valid_BM, leaf_R, node_RN, r_R, valid_R, G, weighting=weighting,
                                leaf_baseline="loo" if loo else "none")
  for b, (parent, leaves, _) in enumerate(trees):
    ref = treerl_ref(parent, rewards[b], leaves, weighting, loo)
    for row in range(b * G, b * G + G):
      want = [ref[n] if n > 0 else 0.0 for n in node_RN[row]]
      want = [w if n >= 0 else 0.0 for w, n in zip(want, node_RN[row])]
      np.testing.assert_allclose(adv[row], want, atol=1e-5)
  if weighting == "sqrt" and not loo:  # the worked example's printed numbers: a, a1, a3, b, b1
    np.testing.assert_allclose(adv[0, [0, 2]], [0.192450, 0.833333], atol=1e-5)
    np.testing.assert_allclose(adv[2, 2], -1.166667, atol=1e-5)
    np.testing.assert_allclose(adv[3, [0, 1]], [-1.0, -0.5], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# VinePPO
# ------------------------------------------------------------------------------------------------


def test_vineppo_token_advantages_match_the_worked_example():
  NL, EOS = 10, 2
  # Row 0: steps [5, NL] [6, 7, NL] [8, EOS]; row 1 ends with a boundary: steps [4, NL] [9, NL].
  tokens, mask = _pad([[5, NL, 6, 7, NL, 8, EOS], [4, NL, 9, NL]], 8)
  np.testing.assert_array_equal(step_starts(tokens, mask, (NL,), 4), [[0, 2, 5, -1], [0, 2, -1, -1]])
  K = 9
  returns = np.zeros((2, 3, K), np.float32)
  for c, wins in enumerate([4, 6, 8]):  # V̂ = 4/9, 6/9, 8/9 (formulas.md §3)
    returns[0, c, :wins] = 1.0
  returns[1, 0, :3] = 1.0
  rmask = np.ones((2, 3, K), np.float32)
  rmask[1, 2] = 0  # row 1 has two steps
  rewards, valid = np.array([1.0, 0.0]), np.ones(2)
  adv = vineppo_token_advantages(tokens, mask, rewards, valid, returns, rmask, boundary_ids=(NL,))
  a = [0.222222, 0.222222, 0.111111]
  np.testing.assert_allclose(adv[0, :7], [a[0]] * 2 + [a[1]] * 3 + [a[2]] * 2, atol=1e-5)
  v0, v1 = 3 / 9, 0.0  # row 1: A = [V1 − V0, r − V1]
  np.testing.assert_allclose(adv[1, :4], [v1 - v0] * 2 + [0.0 - v1] * 2, atol=1e-5)
  assert (adv[~mask] == 0).all()
  # Only V̂(s_0) known (value cap C = 1): the rest filled from the end → A = [5/9, 0, 0].
  adv1 = vineppo_token_advantages(tokens, mask, rewards, valid, returns[:, :1], rmask[:, :1],
                                  boundary_ids=(NL,))
  np.testing.assert_allclose(adv1[0, :7], [0.555556] * 2 + [0.0] * 5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Tree rollouts on a real tiny model
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy():
  tok = ByteTokenizer()
  model = random_model(get_preset("tiny", vocab_size=512))
  graphdef, params = nnx.split(model)
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=12, temperature=1.0, stop_ids=(tok.eos_id,),
                                             pad_id=tok.pad_id))
  prompts = encode_prompts(reasoning_problems("chain_sum", "train", size=2, seed=0), tok, 160)
  return tok, sampler, params, prompts


def test_tree_rollout_rows_nodes_and_advantages(policy):
  tok, sampler, params, prompts = policy
  G = 6
  rollout, tree = sample_tree_rollout(sampler, params, prompts, G, jax.random.key(1), tok, RewardConfig(),
                                      n_roots=2, n_iters=1, top_n=2, n_forks=2)
  P = prompts.tokens_BP.shape[1]
  assert rollout.tokens_RS.shape == (2 * G, P + 12) and tree.node_RN.shape == (2 * G, 12)
  assert tree.row_valid_R.sum() >= 4 and tree.sampled_tokens > 0
  for r in np.flatnonzero(tree.row_valid_R):
    ids = tree.node_RN[r][rollout.completion_mask_RN[r]]
    assert (tree.node_RN[r][~rollout.completion_mask_RN[r]] == -1).all()
    b = r // G
    assert tree.parent_BM[b, ids[0]] == 0 and ids[-1] == tree.leaf_node_R[r]
    for x, y in zip(ids, ids[1:]):  # a token stays in its segment or moves to a child segment
      assert y == x or tree.parent_BM[b, y] == x
  # Advantages from the rollout's arrays equal the recursive reference on the tree's own leaf paths.
  rewards = np.where(tree.row_valid_R > 0, np.arange(2 * G) % 3 == 0, 0).astype(np.float32)
  adv = treerl_token_advantages(tree.parent_BM, tree.valid_BM, tree.leaf_node_R, tree.node_RN, rewards,
                                tree.row_valid_R, G)
  for b in range(2):
    rows = [r for r in range(b * G, b * G + G) if tree.row_valid_R[r]]
    parent = [int(p) for p, v in zip(tree.parent_BM[b], tree.valid_BM[b]) if v]
    ref = treerl_ref(parent, {int(tree.leaf_node_R[r]): float(rewards[r]) for r in rows},
                     [int(tree.leaf_node_R[r]) for r in rows])
    for r in rows:
      want = [ref[n] if n > 0 else 0.0 for n in tree.node_RN[r]]
      np.testing.assert_allclose(adv[r], np.where(tree.node_RN[r] >= 0, want, 0.0), atol=1e-5)


def test_mc_step_returns_fork_every_step(policy):
  tok, sampler, params, prompts = policy
  keep = KeepStateSampler(sampler)
  rollout = sample_groups(keep, params, prompts, 2, jax.random.key(2), tok, RewardConfig(format_coef=1.0))
  same = sample_groups(sampler, params, prompts, 2, jax.random.key(2), tok, RewardConfig(format_coef=1.0))
  np.testing.assert_array_equal(rollout.tokens_RS, same.tokens_RS)  # the wrapper samples the same
  boundary = tuple(range(0, 512, 3))  # a third of the ids end a step: a random model makes many steps
  P = prompts.tokens_BP.shape[1]
  comp, cmask = rollout.tokens_RS[:, P:], rollout.completion_mask_RN
  returns, rmask, n_tokens = mc_step_returns(sampler, params, keep.state, rollout, jax.random.key(3), tok,
                                             RewardConfig(format_coef=1.0), boundary_ids=boundary,
                                             rollouts=2, max_steps=3)
  most = 0
  for r in range(len(comp)):  # pure-Python step starts
    starts = [0] + [i + 1 for i in range(int(cmask[r].sum())) if comp[r, i] in boundary]
    starts = [s for s in starts if s < cmask[r].sum()][:3]
    np.testing.assert_array_equal(rmask[r].sum(axis=1), [2] * len(starts) + [0] * (3 - len(starts)))
    most += 2 * sum(12 - s for s in starts)
  # every rollout draws >= 1 token and at most the slots left after its prefix
  assert rmask.sum() > 2 * len(comp) and rmask.sum() <= n_tokens <= most
  assert set(np.unique(returns)) <= {0.0, 1.0, 2.0} and (returns[rmask == 0] == 0).all()


# ------------------------------------------------------------------------------------------------
# The three smoke configs end to end through the entry point (one shared SFT phase)
# ------------------------------------------------------------------------------------------------


def test_tree_smoke_configs_run_through_main(tmp_path, rl_smoke_sft):
  sft = rl_smoke_sft  # the smoke SFT phase, trained once per pytest run (tests/conftest.py); one device
  lengths = {}
  for name in ("tempo_tiny", "treerl_tiny", "vineppo_tiny"):
    workdir = tmp_path / name
    proc = run_main([f"--config={ROOT}/configs/{name}.py:smoke", f"--workdir={workdir}",
                     f"--config.sft.workdir={sft}", "--config.mesh.data=1",
                     "--config.reward.format_coef=0.5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["final_step"] == 3
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["sampled_tokens"] > 0 for r in records)
    timing = [json.loads(x) for x in (workdir / "timing.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timing] == [1, 2, 3] and all(t["iter_s"] > 0 for t in timing)
    lengths[name] = records
  # Group rollouts count exactly their responses' tokens; VinePPO adds its Monte Carlo rollouts.
  for r in lengths["tempo_tiny"]:
    assert r["sampled_tokens"] == round(r["response_len"] * 16)
  assert all(r["sampled_tokens"] > r["response_len"] * 16 for r in lengths["vineppo_tiny"])
  # The tree's leaves share prefixes: fewer sampled tokens than their total length.
  assert all(r["sampled_tokens"] < r["response_len"] * r["trained_rows"] for r in lengths["treerl_tiny"])
