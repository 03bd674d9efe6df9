"""Tree rollouts for the RL loop: TreeRL's entropy-forked trees and VinePPO's Monte Carlo step rollouts.

* `sample_tree_rollout` grows one EPTree per prompt (`w2s_jax.sampling.tree.sample_tree_entropy`: M chains,
  then forks at the highest −log p tokens) and lays its leaves out as ordinary `Rollout` rows, G slots per
  prompt, group-major. A prompt with fewer than G leaves (few fork candidates) gets padding rows
  (`row_valid_R` 0). `TreeArrays` carries each prompt's tree (node 0 is the prompt, so all of a prompt's
  chains share one root) and the node of every completion token, for `batch.treerl_token_advantages`.
* `mc_step_returns` is VinePPO's value estimation: from the state before every step of every sampled
  response (steps end at boundary tokens, e.g. newlines), K fresh completions are drawn and scored. The
  rollouts fork the finished rows' decode state (`KeepStateSampler` keeps it), so no prefix is recomputed:
  a fork of length f keeps slots [0, f) with their KV cache and re-draws slot f onwards, within the same
  S = P + N slots as the response (so the same length limit applies).

All bookkeeping is per row or per node on the host (NumPy); per-token arrays are built by vectorised
gathers, and the advantages themselves are computed on device (`w2s_jax.rl.batch`).

Legend: B prompts, G rows per prompt, R = B·G rows, P prompt slots, N completion slots, S = P + N,
M nodes per prompt tree (static bound), C steps with values per response, K rollouts per step, F fork rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.rl.batch import step_index
from w2s_jax.rl.rollout import PromptSet, RewardConfig, Rollout, decode_completions, score_rows
from w2s_jax.sampling.sampler import STOPPED, TRUNCATED, DecodeState, Sampler, to_output_jit
from w2s_jax.sampling.tree import fork_rows, sample_tree_entropy


def tree_size(n_roots: int, n_iters: int, top_n: int, n_forks: int) -> tuple[int, int]:
  """(leaves, nodes) of one EPTree at most: leaves M + L·N·T; nodes 1 (the prompt) + M + L·N·(T + 1)
  (each fork splits one segment in two and adds T leaves)."""
  return n_roots + n_iters * top_n * n_forks, 1 + n_roots + n_iters * top_n * (n_forks + 1)


@dataclasses.dataclass
class TreeArrays:
  """The trees of a tree rollout, per prompt, with node 0 the prompt.

  Attributes:
    parent_BM: int32 parent node, −1 for the root and for padding nodes.
    valid_BM: bool, real nodes.
    leaf_node_R: int32 leaf node of each row, −1 on padding rows.
    node_RN: int32 node of each completion token, −1 off the completion.
    row_valid_R: float32 1 on real rows (leaves), 0 on padding rows.
    sampled_tokens: tokens generated to grow the trees (each shared prefix counted once).
  """

  parent_BM: np.ndarray
  valid_BM: np.ndarray
  leaf_node_R: np.ndarray
  node_RN: np.ndarray
  row_valid_R: np.ndarray
  sampled_tokens: int


def sample_tree_rollout(
  sampler: Sampler, params: Any, prompts: PromptSet, group_size: int, key: jax.Array, tokenizer: Tokenizer,
  reward_cfg: RewardConfig, *, n_roots: int, n_iters: int, top_n: int, n_forks: int,
) -> tuple[Rollout, TreeArrays]:
  """TreeRL's rollout: one entropy-forked tree per prompt, leaves as rows (see the module docstring).

  Args:
    sampler: the policy's `Sampler` (N, temperature, stop tokens).
    params: policy params.
    prompts: B prompts.
    group_size: G, rows per prompt; must hold every leaf (`tree_size(...)[0]` is the most).
    key: PRNG key of the draw.
    tokenizer: decodes completions.
    reward_cfg: the reward's terms.
    n_roots, n_iters, top_n, n_forks: EPTree's M, L, N, T (`sample_tree_entropy`).

  Returns:
    (rollout of B·G rows, its `TreeArrays`).
  """
  max_leaves, M = tree_size(n_roots, n_iters, top_n, n_forks)
  if group_size < max_leaves:
    raise ValueError(f"rollout.group_size={group_size} cannot hold a tree's {max_leaves} leaves "
                     "(n_roots + n_iters·top_n·n_forks)")
  tree = sample_tree_entropy(sampler, params, prompts.tokens_BP, prompts.mask_BP, key, n_roots=n_roots,
                             n_iters=n_iters, top_n=top_n, n_forks=n_forks)
  B, G, P = len(prompts.problems), group_size, tree.prompt_len
  R, S = B * G, tree.tokens_LS.shape[1]
  N = S - P
  # Rows: leaves are sorted by prompt; leaf k of prompt b goes to row b·G + k.
  first_leaf_B = np.searchsorted(tree.prompt_L, np.arange(B))
  row_L = tree.prompt_L * G + np.arange(len(tree.prompt_L)) - first_leaf_B[tree.prompt_L]
  tokens_RS = np.full((R, S), sampler.cfg.pad_id, np.int32)
  tokens_RS[row_L] = tree.tokens_LS
  prompt_mask_RS, completion_mask_RS = np.zeros((R, S), bool), np.zeros((R, S), bool)
  prompt_mask_RS[row_L], completion_mask_RS[row_L] = tree.prompt_mask_LS, tree.completion_mask_LS
  logp_RS = np.zeros((R, S), np.float32)
  logp_RS[row_L] = tree.logprobs_LS
  status_R = np.full(R, -1, np.int32)
  status_R[row_L] = tree.status_L
  row_valid_R = np.zeros(R, np.float32)
  row_valid_R[row_L] = 1.0

  # Node ids local to each prompt's tree: 0 is the prompt, then the prompt's nodes in tree order.
  n = len(tree.parent_N)
  order = np.lexsort((np.arange(n), tree.prompt_N))
  first_node_B = np.searchsorted(tree.prompt_N[order], np.arange(B))
  local_N = np.empty(n, np.int32)
  local_N[order] = 1 + np.arange(n) - first_node_B[tree.prompt_N[order]]
  if n and local_N.max() >= M:
    raise RuntimeError(f"a tree has {local_N.max()} nodes, more than the bound {M - 1}")
  parent_BM = np.full((B, M), -1, np.int32)
  valid_BM = np.zeros((B, M), bool)
  valid_BM[:, 0] = True
  parent_BM[tree.prompt_N, local_N] = np.where(tree.parent_N >= 0, local_N[np.maximum(tree.parent_N, 0)], 0)
  valid_BM[tree.prompt_N, local_N] = True
  leaf_node_R = np.full(R, -1, np.int32)
  leaf_node_R[row_L] = local_N[tree.node_L]
  token_node_LN = tree.token_node_LS[:, P:]
  node_RN = np.full((R, N), -1, np.int32)
  node_RN[row_L] = np.where(token_node_LN >= 0, local_N[np.maximum(token_node_LN, 0)], -1)

  completion_mask_RN = completion_mask_RS[:, P:]
  texts = decode_completions(tokens_RS[:, P:], completion_mask_RN, tokenizer)
  scores = score_rows(prompts.problems, texts, status_R == STOPPED, G, completion_mask_RN.sum(axis=1),
                      N, reward_cfg)
  rollout = Rollout(
    problems=list(prompts.problems), group_size=G, tokens_RS=tokens_RS,
    mask_RS=prompt_mask_RS | completion_mask_RS, completion_mask_RN=completion_mask_RN,
    sampler_logp_RN=logp_RS[:, P:], texts=texts, answers=scores["answers"],
    correct_R=scores["correct_R"] * row_valid_R, format_R=scores["format_R"] * row_valid_R,
    truncated_R=status_R == TRUNCATED, rewards_R=scores["rewards_R"] * row_valid_R,
  )
  sampled = int(np.sum(tree.end_N - tree.start_N))
  return rollout, TreeArrays(parent_BM, valid_BM, leaf_node_R, node_RN, row_valid_R, sampled)


class KeepStateSampler:
  """A `Sampler` front end (same call, same samples) that keeps the final `DecodeState` of its last call
  in `.state`, so rollouts can later fork the finished rows (`mc_step_returns`)."""

  def __init__(self, sampler: Sampler):
    self.sampler, self.cfg = sampler, sampler.cfg
    self.state: DecodeState | None = None

  def __call__(self, params: Any, prompts_BP: Any, prompt_mask_BP: Any, key: jax.Array, *,
               compact: bool = False):
    P = int(np.shape(prompts_BP)[1])
    state = self.sampler.prefill(params, prompts_BP, prompt_mask_BP)
    self.state = self.sampler.decode(params, state, key, min_length=P, compact=compact)
    return to_output_jit(self.state, prompt_len=P)


def step_starts(tokens_RN: np.ndarray, mask_RN: np.ndarray, boundary_ids: tuple[int, ...],
                max_steps: int) -> np.ndarray:
  """Completion offset where each of the first `max_steps` steps starts, −1 past the last step [R, C].

  The first token of each step of `batch.step_index` (the one segmentation rule): step 0 starts at 0, step
  c ≥ 1 right after the c-th boundary token, if a token follows it.
  """
  step_RN = step_index(tokens_RN, mask_RN, tuple(boundary_ids))
  at_RCN = step_RN[:, None, :] == np.arange(max_steps)[None, :, None]
  return np.where(at_RCN.any(axis=-1), np.argmax(at_RCN, axis=-1), -1).astype(np.int32)


def mc_step_returns(
  sampler: Sampler, params: Any, state: DecodeState, rollout: Rollout, key: jax.Array, tokenizer: Tokenizer,
  reward_cfg: RewardConfig, *, boundary_ids: tuple[int, ...], rollouts: int, max_steps: int,
  row_valid_R: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
  """VinePPO's Monte Carlo returns: K fresh completions from the state before each step of each row.

  Args:
    sampler: the `Sampler` that drew `rollout`.
    params: policy params.
    state: the final decode state of `rollout`'s draw (`KeepStateSampler.state`), rows aligned with it.
    rollout: the sampled responses.
    key: PRNG key.
    tokenizer, reward_cfg: decode and score the rollouts like the responses.
    boundary_ids: tokens that end a step.
    rollouts: K.
    max_steps: C, VinePPO's `max_step_for_value_estimation` (later steps' values are filled from the end).
    row_valid_R: rows that need values; default all.

  Returns:
    (returns_RCK float32, mask_RCK float32 (1 where a rollout was drawn), tokens generated by the rollouts).
  """
  R, K, C = len(rollout.rewards_R), int(rollouts), int(max_steps)
  if K < 1 or C < 1:
    raise ValueError(
      f"vineppo needs advantage.mc_rollouts >= 1 and advantage.mc_max_steps >= 1, got {K} and {C}")
  P = rollout.tokens_RS.shape[1] - rollout.completion_mask_RN.shape[1]
  start_RC = step_starts(rollout.tokens_RS[:, P:], rollout.completion_mask_RN, boundary_ids, C)
  if row_valid_R is not None:
    start_RC = np.where(np.asarray(row_valid_R)[:, None] > 0, start_RC, -1)
  r_F, c_F = np.nonzero(start_RC >= 0)
  r_F, c_F = np.repeat(r_F, K), np.repeat(c_F, K)
  k_F = np.tile(np.arange(K), len(r_F) // K)
  returns_RCK, mask_RCK = np.zeros((R, C, K), np.float32), np.zeros((R, C, K), np.float32)
  live = len(r_F)
  if live == 0:
    return returns_RCK, mask_RCK, 0
  F = max(8, 1 << (live - 1).bit_length())  # a power of two: few compiled shapes
  rows_F = np.zeros(F, np.int32)
  rows_F[:live] = r_F
  lengths_F = np.full(F, P, np.int32)
  lengths_F[:live] = P + start_RC[r_F, c_F]
  live_F = np.arange(F) < live
  child = fork_rows(state, rows_F, lengths_F, live_F, pad_id=sampler.cfg.pad_id)
  child = jax.device_get(sampler.decode(params, child, key, min_length=P))
  length_F = np.asarray(child.length_B)[:live]
  tokens_FN = np.asarray(child.tokens_BS)[:live, P:]
  n_F = np.arange(tokens_FN.shape[1])
  cmask_FN = n_F[None] < (length_F - P)[:, None]
  texts = decode_completions(tokens_FN, cmask_FN, tokenizer)
  problems = [rollout.problems[r // rollout.group_size] for r in r_F]
  scores = score_rows(problems, texts, np.asarray(child.status_B)[:live] == STOPPED, 1, cmask_FN.sum(axis=1),
                      tokens_FN.shape[1], reward_cfg)
  returns_RCK[r_F, c_F, k_F] = scores["rewards_R"]
  mask_RCK[r_F, c_F, k_F] = 1.0
  return returns_RCK, mask_RCK, int(np.sum(length_F - lengths_F[:live]))
