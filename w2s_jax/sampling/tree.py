"""Forking tree sampler: rollout trees whose branches share their prefix's KV cache.

Two ways to grow a tree per prompt (one tree per prompt row):

* `sample_tree_steps` forks at *step boundaries*: every row decodes until it draws a boundary token
  (e.g. the newline that ends a reasoning step), then each such node is forked `branching[d]` ways at
  depth d; after the last depth rows decode to the end. Children start from the parent's state as is:
  the boundary token is their pending token, so no token is computed twice.
* `sample_tree_entropy` is TreeRL's EPTree (formulas.md §2): `n_roots` chains per prompt, then
  `n_iters` rounds in which each tree picks its `top_n` tokens with the highest -log p(token) (TreeRL's
  "entropy"; node starts are never picked) and re-samples each `n_forks` times from the tokens before
  it. A fork at slot f copies the parent row (cache included) with length f; the first decode step
  recomputes the keys/values of token f - 1 only, to get the logits that re-draw token f.

Forks copy rows of the parent's `DecodeState` (`take_rows`); the prefix is never re-run. Every tree
node is a token span [start, end) in the slot layout of `sampler.py` (prompt in [0, P), completions
from P on); node spans of a leaf's path tile its completion. Orchestration is on the host (numpy);
each decode call is the jitted, donating `Sampler.decode` with `compact=True`: rows of stopped parents or
missing candidates start inactive, and the batch shrinks as rows finish (`compact.py`, through the finer
batch sizes B, ..., 16, 12, 8, 6, 4, 3, 2 by default), so forks that start late (few tokens left) stop
costing steps once they are done.

Outputs (`Tree`) are flat numpy arrays. Legend: N nodes, L leaves, S slots.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.sampling.sampler import PAUSED, RUNNING, STOPPED, DecodeState, Sampler


@dataclasses.dataclass
class Tree:
  """Rollout trees of a batch of prompts as flat arrays (nodes in BFS order: parents first).

  Attributes:
    parent_N: parent node, -1 for the top segments (children of the prompt).
    depth_N: 0 for top segments.
    start_N, end_N: the node's token span [start, end) in slot coordinates of the leaf sequences.
    is_leaf_N: bool.
    prompt_N: index of the prompt (tree) of each node.
    leaf_N: row of each leaf node in the leaf arrays, -1 for inner nodes.
    tokens_LS: int32 full leaf sequences (left-padded prompt, completion, padding).
    prompt_mask_LS, completion_mask_LS: bool masks of the leaf sequences.
    logprobs_LS, entropies_LS: float32, at completion tokens (0 elsewhere).
    status_L: STOPPED or TRUNCATED.
    prompt_L: prompt index of each leaf.
    node_L: the leaf node of each leaf row.
    token_node_LS: int32 node of each completion token (-1 on prompt and padding).
    forward_tokens: real tokens run through the model to build all trees (prefill + decode).
    prompt_len: P.
  """

  parent_N: np.ndarray
  depth_N: np.ndarray
  start_N: np.ndarray
  end_N: np.ndarray
  is_leaf_N: np.ndarray
  prompt_N: np.ndarray
  leaf_N: np.ndarray
  tokens_LS: np.ndarray
  prompt_mask_LS: np.ndarray
  completion_mask_LS: np.ndarray
  logprobs_LS: np.ndarray
  entropies_LS: np.ndarray
  status_L: np.ndarray
  prompt_L: np.ndarray
  node_L: np.ndarray
  token_node_LS: np.ndarray
  forward_tokens: int
  prompt_len: int


@functools.partial(jax.jit, static_argnames=("pad_id",))
def fork_rows(state: DecodeState, rows_R, lengths_R, live_R, *, pad_id: int) -> DecodeState:
  """Copies rows `rows_R` of `state` truncated to `lengths_R` slots; live rows are set RUNNING."""
  child = jax.tree.map(lambda x: jnp.take(x, rows_R, axis=0), state)
  keep_RS = jnp.arange(child.tokens_BS.shape[1])[None] < lengths_R[:, None]
  return child.replace(
    tokens_BS=jnp.where(keep_RS, child.tokens_BS, pad_id),
    logprobs_BS=jnp.where(keep_RS, child.logprobs_BS, 0.0),
    entropies_BS=jnp.where(keep_RS, child.entropies_BS, 0.0),
    length_B=lengths_R.astype(jnp.int32),
    status_B=jnp.where(live_R, RUNNING, STOPPED).astype(jnp.int32),
    fed_B=jnp.zeros_like(child.fed_B),
  )


def _concat(states: list[DecodeState]) -> DecodeState:
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *states)


class _Builder:
  """Host-side node bookkeeping. A node's tokens can be read from row `row` of decode group `group`."""

  def __init__(self):
    self.parent: list[int] = []
    self.start: list[int] = []
    self.end: list[int] = []
    self.leaf: list[bool] = []
    self.prompt: list[int] = []
    self.where: list[tuple[int, int]] = []  # (group, row)
    self.groups: list[dict[str, np.ndarray]] = []  # host copies of each decode group
    self.states: list[DecodeState] = []
    self.forward_tokens = 0

  def add_group(self, state: DecodeState) -> int:
    self.states.append(state)
    keys = ("tokens_BS", "logprobs_BS", "entropies_BS", "length_B", "status_B")
    host = {k: np.asarray(getattr(state, k)) for k in keys}
    host["start_B"] = np.asarray(state.cache.start_B)
    self.groups.append(host)
    self.forward_tokens += int(np.asarray(state.fed_B).sum())
    return len(self.groups) - 1

  def add(self, parent: int, start: int, end: int, leaf: bool, prompt: int, where: tuple[int, int]) -> int:
    self.parent.append(parent)
    self.start.append(start)
    self.end.append(end)
    self.leaf.append(leaf)
    self.prompt.append(prompt)
    self.where.append(where)
    return len(self.parent) - 1

  def split(self, node: int, slot: int) -> None:
    """Cuts `node` at `slot`: it keeps [start, slot); a new tail [slot, end) takes its children."""
    tail = self.add(node, slot, self.end[node], self.leaf[node], self.prompt[node], self.where[node])
    for c in range(len(self.parent)):
      if self.parent[c] == node and c != tail:
        self.parent[c] = tail
    self.end[node], self.leaf[node] = slot, False

  def _fork_sources(self, sources: list[tuple[int, int, int] | None], pad_id: int) -> DecodeState:
    """A child state: entry i copies (group, row) truncated to `length` slots, or is inactive if None."""
    by_group: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
      by_group.setdefault(0 if src is None else src[0], []).append(i)
    parts, order = [], []
    for g, idx in sorted(by_group.items()):
      rows = np.array([0 if sources[i] is None else sources[i][1] for i in idx], np.int32)
      lengths = np.array(
        [self.groups[g]["length_B"][0] if sources[i] is None else sources[i][2] for i in idx], np.int32
      )
      live = np.array([sources[i] is not None for i in idx])
      parts.append(fork_rows(self.states[g], rows, lengths, live, pad_id=pad_id))
      order += idx
    state = parts[0] if len(parts) == 1 else _concat(parts)
    if order != sorted(order):
      inverse = np.argsort(np.array(order))
      state = jax.tree.map(lambda x: jnp.take(x, inverse, axis=0), state)
    return state

  def finish(self, prompt_len: int) -> Tree:
    n = len(self.parent)
    children: list[list[int]] = [[] for _ in range(n)]
    for c, p in enumerate(self.parent):
      if p >= 0:
        children[p].append(c)
    order, depth = [], {}
    frontier = sorted((c for c in range(n) if self.parent[c] < 0), key=lambda c: (self.prompt[c], c))
    for c in frontier:
      depth[c] = 0
    while frontier:
      order += frontier
      nxt = []
      for c in frontier:
        for k in sorted(children[c], key=lambda k: self.start[k] * n + k):
          depth[k] = depth[c] + 1
          nxt.append(k)
      frontier = nxt
    new_id = {old: i for i, old in enumerate(order)}
    leaves = sorted((c for c in order if self.leaf[c]), key=lambda c: (self.prompt[c], new_id[c]))
    leaf_row = {c: i for i, c in enumerate(leaves)}
    pick = lambda key: np.stack([self.groups[self.where[c][0]][key][self.where[c][1]] for c in leaves])
    tokens, length, start_B = pick("tokens_BS"), pick("length_B"), pick("start_B")
    slot = np.arange(tokens.shape[1])[None]
    completion = (slot >= prompt_len) & (slot < length[:, None])
    token_node = np.full(tokens.shape, -1, np.int32)
    for i, c in enumerate(leaves):
      node = c
      while node >= 0:
        token_node[i, self.start[node] : self.end[node]] = new_id[node]
        node = self.parent[node]
    return Tree(
      parent_N=np.array([new_id[self.parent[c]] if self.parent[c] >= 0 else -1 for c in order], np.int32),
      depth_N=np.array([depth[c] for c in order], np.int32),
      start_N=np.array([self.start[c] for c in order], np.int32),
      end_N=np.array([self.end[c] for c in order], np.int32),
      is_leaf_N=np.array([self.leaf[c] for c in order], bool),
      prompt_N=np.array([self.prompt[c] for c in order], np.int32),
      leaf_N=np.array([leaf_row.get(c, -1) for c in order], np.int32),
      tokens_LS=tokens,
      prompt_mask_LS=(slot >= start_B[:, None]) & (slot < prompt_len),
      completion_mask_LS=completion,
      logprobs_LS=np.where(completion, pick("logprobs_BS"), 0.0).astype(np.float32),
      entropies_LS=np.where(completion, pick("entropies_BS"), 0.0).astype(np.float32),
      status_L=pick("status_B"),
      prompt_L=np.array([self.prompt[c] for c in leaves], np.int32),
      node_L=np.array([new_id[c] for c in leaves], np.int32),
      token_node_LS=token_node,
      forward_tokens=self.forward_tokens,
      prompt_len=prompt_len,
    )


def sample_tree_steps(
  sampler: Sampler,
  params: Any,
  prompts_BP: Any,
  prompt_mask_BP: Any,
  key: jax.Array,
  *,
  branching: Sequence[int],
  boundary_ids: Sequence[int],
  compact: bool = True,
  fine_buckets: bool = True,
) -> Tree:
  """Grows one tree per prompt by forking at step boundaries.

  Args:
    sampler: the jitted sampler (its config gives temperature, filters, stop ids, max_new_tokens).
    params: model params.
    prompts_BP, prompt_mask_BP: left-padded prompts (`left_pad`).
    key: PRNG key.
    branching: b_0, b_1, ...: each prompt gets b_0 first-step nodes; a node of depth d that ends at a
      boundary token gets b_{d+1} children. Nodes of depth len(branching) - 1 run to the end.
    boundary_ids: tokens that end a step (kept as the step's last token).
    compact: drop finished rows from each decode batch (`Sampler.decode(compact=True)`; same tree).
    fine_buckets: shrink the batch through `bucket_sizes(..., fine=True)` (fewer idle rows than the
      powers of two, for more compiled loops); same tree.

  Returns:
    A `Tree`; without early stops each prompt has prod(branching) leaves.
  """
  b = _Builder()
  pad = sampler.cfg.pad_id
  root = sampler.prefill(params, prompts_BP, prompt_mask_BP)
  g_root = b.add_group(root)
  n, P = np.shape(prompts_BP)
  # Sources of the next depth: (group, row, length, parent node, prompt), None = inactive row.
  frontier: list[tuple[int, int, int, int, int] | None] = [(g_root, i, P, -1, i) for i in range(n)]
  for d, width in enumerate(branching):
    sources = [src for src in frontier for _ in range(width)]
    state = b._fork_sources([None if s is None else s[:3] for s in sources], pad)
    last = d == len(branching) - 1
    # Depth-0 rows all start at P; deeper rows start anywhere, and a per-call hint would recompile.
    state = sampler.decode(
      params,
      state,
      jax.random.fold_in(key, d),
      pause_ids=() if last else boundary_ids,
      min_length=P if d == 0 else 0,
      compact=compact,
      fine_buckets=fine_buckets,
    )
    g = b.add_group(state)
    host = b.groups[g]
    frontier = []
    for r, src in enumerate(sources):
      if src is None:
        frontier.append(None)
        continue
      end, status = int(host["length_B"][r]), int(host["status_B"][r])
      node = b.add(src[3], src[2], end, status != PAUSED, src[4], (g, r))
      frontier.append((g, r, end, node, src[4]) if status == PAUSED else None)
  return b.finish(P)


def sample_tree_entropy(
  sampler: Sampler,
  params: Any,
  prompts_BP: Any,
  prompt_mask_BP: Any,
  key: jax.Array,
  *,
  n_roots: int,
  n_iters: int,
  top_n: int,
  n_forks: int,
  compact: bool = True,
  fine_buckets: bool = True,
) -> Tree:
  """TreeRL's EPTree: fork the highest -log p tokens of existing chains (formulas.md §2).

  Args:
    sampler, params, prompts_BP, prompt_mask_BP, key: as in `sample_tree_steps`.
    n_roots: M independent chains per prompt.
    n_iters: L forking rounds.
    top_n: N tokens forked per tree and round (fewer if fewer candidates remain).
    n_forks: T children per forked token.
    compact: drop finished rows from each decode batch (`Sampler.decode(compact=True)`; same tree).
    fine_buckets: shrink the batch through `bucket_sizes(..., fine=True)` (fewer idle rows than the
      powers of two, for more compiled loops); same tree.

  Returns:
    A `Tree`; without early stops each prompt has n_roots + n_iters * top_n * n_forks leaves.
  """
  b = _Builder()
  pad = sampler.cfg.pad_id
  root = sampler.prefill(params, prompts_BP, prompt_mask_BP)
  g_root = b.add_group(root)
  n, P = np.shape(prompts_BP)
  state = b._fork_sources([(g_root, i, P) for i in range(n) for _ in range(n_roots)], pad)
  g = b.add_group(sampler.decode(
    params, state, jax.random.fold_in(key, 0), min_length=P, compact=compact, fine_buckets=fine_buckets
  ))
  host = b.groups[g]
  for r in range(n * n_roots):
    b.add(-1, P, int(host["length_B"][r]), True, r // n_roots, (g, r))
  for it in range(n_iters):
    blocks: list[list[tuple[int, int] | None]] = []
    for i in range(n):
      cands = []
      for node in range(len(b.parent)):
        if b.prompt[node] != i:
          continue
        grp, row = b.where[node]
        neg_logp = -b.groups[grp]["logprobs_BS"][row]
        cands += [(-neg_logp[f], node, f) for f in range(b.start[node] + 1, b.end[node])]
      chosen = [(node, f) for _, node, f in sorted(cands)[:top_n]]
      blocks.append(chosen + [None] * (top_n - len(chosen)))
    sources = []
    for chosen in blocks:
      for pick in chosen:
        for _ in range(n_forks):
          if pick is None:
            sources.append(None)
          else:
            grp, row = b.where[pick[0]]
            sources.append((grp, row, pick[1]))
    state = b._fork_sources(sources, pad)
    g = b.add_group(sampler.decode(
      params, state, jax.random.fold_in(key, it + 1), compact=compact, fine_buckets=fine_buckets
    ))
    host = b.groups[g]
    rows = {}  # (node, slot) -> first child row
    for j, pick in enumerate(p for chosen in blocks for p in chosen):
      if pick is not None:
        rows[pick] = j * n_forks
    # Cut each node at its largest slot first: the head keeps its id, so smaller slots still fall in it.
    for node, f in sorted(rows, key=lambda nf: (nf[0], -nf[1])):
      b.split(node, f)
      for r in range(rows[node, f], rows[node, f] + n_forks):
        b.add(node, f, int(host["length_B"][r]), True, b.prompt[node], (g, r))
  return b.finish(P)


__all__ = ["Tree", "sample_tree_entropy", "sample_tree_steps"]
