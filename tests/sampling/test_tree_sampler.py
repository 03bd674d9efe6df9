"""The forking tree sampler: structure, shared prefixes, log-probs vs `score`, counted forward tokens."""

import jax
import numpy as np
import pytest
from flax import nnx

from w2s_jax.sampling import STOPPED, TRUNCATED, Sampler, SamplingConfig, left_pad, score
from w2s_jax.sampling.tree import sample_tree_entropy, sample_tree_steps

PROMPTS = [[5, 17, 301, 44, 9], [3, 77]]
CFG = SamplingConfig(max_new_tokens=10, temperature=1.0, stop_ids=(7,))


@pytest.fixture(scope="module")
def setup(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  tokens, mask = left_pad(PROMPTS)
  return tiny_model, Sampler(graphdef, CFG), params, tokens, mask


def _path(tree, node):
  out = []
  while node >= 0:
    out.append(int(node))
    node = tree.parent_N[node]
  return out[::-1]


def _check_tree(tree, model, prompts_BP, prompt_mask_BP):
  """Checks every property a consumer relies on; returns the leaves' paths."""
  P = tree.prompt_len
  paths = []
  for i, leaf in enumerate(tree.node_L):
    path = _path(tree, leaf)
    paths.append(path)
    assert tree.is_leaf_N[leaf] and tree.leaf_N[leaf] == i
    assert all(tree.prompt_N[n] == tree.prompt_L[i] for n in path)
    # The path's spans tile the completion: root starts at P, each child where its parent ends.
    assert tree.start_N[path[0]] == P and tree.parent_N[path[0]] == -1
    for a, b in zip(path, path[1:]):
      assert tree.start_N[b] == tree.end_N[a] and tree.depth_N[b] == tree.depth_N[a] + 1
    comp = np.flatnonzero(tree.completion_mask_LS[i])
    assert comp[0] == P and tree.end_N[path[-1]] == comp[-1] + 1
    want = np.full(tree.tokens_LS.shape[1], -1)
    for n in path:
      want[tree.start_N[n] : tree.end_N[n]] = n
    np.testing.assert_array_equal(tree.token_node_LS[i], want)
    # The prompt is the tree's prompt.
    p = tree.prompt_L[i]
    np.testing.assert_array_equal(tree.tokens_LS[i, :P], np.where(prompt_mask_BP[p], prompts_BP[p], 0))
    np.testing.assert_array_equal(tree.prompt_mask_LS[i, :P], prompt_mask_BP[p])
    assert tree.status_L[i] in (STOPPED, TRUNCATED)
    assert (tree.tokens_LS[i, comp[-1] + 1 :] == CFG.pad_id).all()
  # Leaf tokens begin with their ancestors' tokens: every leaf through node n has the same tokens
  # up to n's end (prompt included).
  for n in range(len(tree.parent_N)):
    through = [i for i, path in enumerate(paths) if n in path]
    assert through, f"node {n} is on no leaf's path"
    block = tree.tokens_LS[through, : tree.end_N[n]]
    assert (block == block[0]).all()
  # Log-probs of every leaf (computed with copied caches) equal a no-cache forward of the leaf.
  lp, _ = score(model, tree.tokens_LS, tree.prompt_mask_LS | tree.completion_mask_LS)
  comp = tree.completion_mask_LS
  np.testing.assert_allclose(tree.logprobs_LS[comp], np.asarray(lp)[comp], atol=1e-5, rtol=0)
  # Counted forward tokens: the prompts once (all but the pending last token) + each node's span once.
  node_tokens = int((tree.end_N - tree.start_N).sum())
  expected = int(prompt_mask_BP.sum()) - len(prompts_BP) + node_tokens
  assert tree.forward_tokens == expected
  independent = sum(int(prompt_mask_BP[p].sum()) - 1 for p in tree.prompt_L) + int(comp.sum())
  assert tree.forward_tokens < independent
  return paths


def test_entropy_tree(setup):
  model, sampler, params, tokens, mask = setup
  tree = sample_tree_entropy(
    sampler, params, tokens, mask, jax.random.key(0), n_roots=2, n_iters=2, top_n=1, n_forks=2
  )
  _check_tree(tree, model, tokens, mask)
  for p in range(len(PROMPTS)):  # M + L * N * T leaves per prompt
    assert (tree.prompt_L == p).sum() == 2 + 2 * 1 * 2
  # One round picks, per tree, the root-chain token with the highest -log p (after each chain's first).
  kw = dict(n_roots=2, top_n=1, n_forks=2)
  roots = sample_tree_entropy(sampler, params, tokens, mask, jax.random.key(1), n_iters=0, **kw)
  one = sample_tree_entropy(sampler, params, tokens, mask, jax.random.key(1), n_iters=1, **kw)
  _check_tree(one, model, tokens, mask)
  P = tree.prompt_len
  for p in range(len(PROMPTS)):
    chains = np.flatnonzero(roots.prompt_L == p)
    neg = np.where(roots.completion_mask_LS[chains], -roots.logprobs_LS[chains], -np.inf)
    neg[:, P] = -np.inf
    c, f = np.unravel_index(np.argmax(neg), neg.shape)
    forks = [n for n in range(len(one.parent_N)) if one.prompt_N[n] == p and one.depth_N[n] == 1]
    assert len(forks) == 3 and {int(one.start_N[n]) for n in forks} == {f}
    leaves = np.flatnonzero(one.prompt_L == p)
    # The untouched chain and the split chain's tail are the root chains, token for token.
    kept = [i for i in leaves if any((one.tokens_LS[i] == roots.tokens_LS[j]).all() for j in chains)]
    assert len(kept) == 2
    for i in leaves:  # the forks share the chosen chain up to f (exclusive)
      if i not in kept:
        np.testing.assert_array_equal(one.tokens_LS[i, :f], roots.tokens_LS[chains[c], :f])


def test_step_tree(setup):
  model, sampler, params, tokens, mask = setup
  boundary = tuple(range(0, 512, 5))  # ~20% of the vocabulary ends a step
  tree = sample_tree_steps(
    sampler, params, tokens, mask, jax.random.key(2), branching=(2, 2), boundary_ids=boundary
  )
  _check_tree(tree, model, tokens, mask)
  assert tree.depth_N.max() <= 1
  for n in range(len(tree.parent_N)):
    kids = np.flatnonzero(tree.parent_N == n)
    if tree.is_leaf_N[n]:
      assert kids.size == 0
    else:  # an inner node ended with a boundary token and has branching[1] children
      assert kids.size == 2 and tree.depth_N[n] == 0
      row = np.flatnonzero(tree.token_node_LS == n)[0] // tree.tokens_LS.shape[1]
      assert tree.tokens_LS[row, tree.end_N[n] - 1] in boundary
  for p in range(len(PROMPTS)):
    roots = np.flatnonzero((tree.parent_N == -1) & (tree.prompt_N == p))
    assert roots.size == 2
    n_inner = int((~tree.is_leaf_N[roots]).sum())
    assert (tree.prompt_L == p).sum() == 2 * n_inner + (2 - n_inner)
  assert (~tree.is_leaf_N).any()  # the boundary set is large enough that some step ends early
