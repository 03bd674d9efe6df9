"""From a rollout to a train batch: KL in the reward, advantages by name, RFT filtering, minibatches.

Advantage estimators, by the names of TRL/verl (all in `w2s_jax.advantages`):

- `grpo`, `dr_grpo`, `rloo`, `reinforce`, `psr`, `nsr`, `w_reinforce`: from rewards [B, G], one value per
  response, spread over its tokens;
- `reinforce_pp_baseline`: group mean subtracted, then whitened over the batch's tokens;
- `reinforce_pp`: token rewards [R, N] (outcome on the last token, − β·KL per token), returns whitened;
- `gae`: token rewards and the critic's values; also gives the value targets (`returns`);
- `rft`: rejection-sampling SFT, A = 1 on correct samples and the others masked out (see `rft_keep`);
- `tempo`: Prefix-to-Tree/TEMPO on the group's token trie (GRPO + branch-gated TD terms; = GRPO when no
  two responses share a first token), per prompt by `jax.vmap` of `tempo_advantages`;
- `treerl`: TreeRL's global + local advantages on the entropy-forked rollout tree (`tree_rollout`),
  `treerl_token_advantages`;
- `vineppo`: VinePPO's step advantages from K Monte Carlo rollouts per step boundary
  (`tree_rollout.mc_step_returns`), `vineppo_token_advantages`.

KL in the reward (`kl_where="reward"`, verl `use_kl_in_reward`, TRL RLOO): the token-level estimators
get r_t −= β·KL_t; the sequence-level ones r_i −= β·Σ_t KL_{i,t} (TRL RLOO's sequence sum).

Legend: B prompts, G samples per prompt, R = B·G rows, N completion slots, M tree nodes per prompt (node 0
is the prompt), C steps with a Monte Carlo value per response, K rollouts per step.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.advantages import (
  ADVANTAGE_ESTIMATORS,
  broadcast_to_tokens,
  gae_advantages,
  outcome_token_rewards,
)
from w2s_jax.advantages.group import w_reinforce_advantages
from w2s_jax.advantages.tree import (
  gather_to_tokens,
  mc_step_advantages,
  mc_step_values,
  tempo_advantages,
  treerl_advantages,
)
from w2s_jax.losses.policy import kl_penalty

GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce", "psr", "nsr", "w_reinforce")
TOKEN_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "gae")
TREE_ESTIMATORS = ("tempo", "treerl", "vineppo")
ADVANTAGES = (*GROUP_ESTIMATORS, *TOKEN_ESTIMATORS, *TREE_ESTIMATORS, "rft")


def check_advantage_name(name: str) -> None:
  if name not in ADVANTAGES:
    raise ValueError(f"unknown advantage estimator {name!r}; choose one of {list(ADVANTAGES)}")


@functools.partial(jax.jit, static_argnames=("kind",))
def sequence_kl(
  old_logp_RN: jax.Array, ref_logp_RN: jax.Array, mask_RN: jax.Array, *, kind: str
) -> jax.Array:
  """Per-token KL estimate of the sampling policy against the reference, 0 off the mask [R, N]."""
  return kl_penalty(old_logp_RN, ref_logp_RN, kind, mask_BL=mask_RN)[0]


@functools.partial(jax.jit, static_argnames=(
  "name", "group_size", "gamma", "lam", "whiten", "positive_weight", "negative_weight", "grpo_eps",
  "td_weight", "root_td"))
def _advantages(
  rewards_R, mask_RN, group_valid_R, kl_RN, kl_coef, values_RN, tokens_RN, *, name, group_size, gamma, lam,
  whiten, positive_weight, negative_weight, grpo_eps, td_weight, root_td,
):
  R, N = mask_RN.shape
  B = R // group_size
  valid_BG = group_valid_R.reshape(B, group_size)
  token_mask_RN = mask_RN * group_valid_R[:, None]
  if name == "tempo":
    rewards_BG = (rewards_R - kl_coef * jnp.sum(kl_RN * token_mask_RN, axis=-1)).reshape(B, group_size)
    tempo = functools.partial(tempo_advantages, td_weight=td_weight, root_td=root_td, eps=grpo_eps)
    adv_BGN = jax.vmap(tempo)(tokens_RN.reshape(B, group_size, N), token_mask_RN.reshape(B, group_size, N),
                              rewards_BG)
    return adv_BGN.reshape(R, N), jnp.zeros_like(token_mask_RN)
  if name in GROUP_ESTIMATORS:
    rewards_R = rewards_R - kl_coef * jnp.sum(kl_RN * token_mask_RN, axis=-1)
    rewards_BG = rewards_R.reshape(B, group_size)
    if name == "w_reinforce":
      adv_BG = w_reinforce_advantages(rewards_BG, valid_BG, positive_weight=positive_weight,
                                      negative_weight=negative_weight)
    elif name == "grpo":
      adv_BG = ADVANTAGE_ESTIMATORS[name](rewards_BG, valid_BG, eps=grpo_eps)
    else:
      adv_BG = ADVANTAGE_ESTIMATORS[name](rewards_BG, valid_BG)
    return broadcast_to_tokens(adv_BG, token_mask_RN), jnp.zeros_like(token_mask_RN)
  if name == "reinforce_pp_baseline":
    rewards_BG = (rewards_R - kl_coef * jnp.sum(kl_RN * token_mask_RN, axis=-1)).reshape(B, group_size)
    return ADVANTAGE_ESTIMATORS[name](rewards_BG, token_mask_RN, valid_BG), jnp.zeros_like(token_mask_RN)
  token_rewards_RN = outcome_token_rewards(rewards_R, token_mask_RN, kl_RN, kl_coef=kl_coef)
  if name == "reinforce_pp":
    return ADVANTAGE_ESTIMATORS[name](token_rewards_RN, token_mask_RN, gamma=gamma)
  return gae_advantages(token_rewards_RN, values_RN, token_mask_RN, gamma=gamma, lam=lam, whiten=whiten)


def compute_advantages(
  name: str,
  rewards_R: np.ndarray,
  completion_mask_RN: np.ndarray,
  group_size: int,
  *,
  group_valid_R: np.ndarray | None = None,
  kl_RN: np.ndarray | None = None,
  kl_coef: float = 0.0,
  values_RN: np.ndarray | None = None,
  gamma: float = 1.0,
  lam: float = 0.95,
  whiten: bool = True,
  positive_weight: float = 0.1,
  negative_weight: float = 1.0,
  grpo_eps: float = 1e-6,
  tokens_RN: np.ndarray | None = None,
  td_weight: float = 1.0,
  root_td: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """Per-token advantages of a rollout by estimator name (see the module table).

  Args:
    name: the estimator (not `rft`: see `rft_keep`; not `treerl`/`vineppo`, which need their rollout's
      trees: `treerl_token_advantages`, `vineppo_token_advantages`).
    rewards_R: one reward per row, rows group-major [R].
    completion_mask_RN: the completion tokens [R, N].
    group_size: G.
    group_valid_R: rows that take part (padding groups are 0) [R]; default all.
    kl_RN: per-token KL of the sampling policy to the reference (KL in the reward), or None.
    kl_coef: β of the KL in the reward.
    values_RN: the critic's V(s_t) (`gae` only).
    gamma, lam, whiten: GAE's γ, λ and batch whitening (`reinforce_pp` uses γ).
    positive_weight, negative_weight: λ₊, λ₋ of `w_reinforce`.
    grpo_eps: ε added to the group std of `grpo` and `tempo`.
    tokens_RN: the completion token ids [R, N] (`tempo` only: its prefix tree).
    td_weight, root_td: `tempo_advantages`' TD coefficient and root-branch choice.

  Returns:
    (advantages_RN, returns_RN) float32; returns are GAE's value targets (0 for other estimators).
  """
  check_advantage_name(name)
  if name == "rft":
    raise ValueError("'rft' has no advantages: build its batch with rft_keep (see build_batch)")
  mask_RN = np.asarray(completion_mask_RN, np.float32)
  R = mask_RN.shape[0]
  if R % group_size:
    raise ValueError(f"{R} rows do not split into groups of {group_size}")
  if name in ("treerl", "vineppo"):
    raise ValueError(f"advantage {name!r} needs its rollout's trees: use {name}_token_advantages")
  if name == "gae" and values_RN is None:
    raise ValueError("advantage 'gae' needs the critic's values_RN")
  if name == "tempo" and tokens_RN is None:
    raise ValueError("advantage 'tempo' needs the completion tokens_RN (its prefix tree)")
  valid_R = np.ones(R, np.float32) if group_valid_R is None else np.asarray(group_valid_R, np.float32)
  kl_RN = np.zeros_like(mask_RN) if kl_RN is None else np.asarray(kl_RN, np.float32)
  values_RN = np.zeros_like(mask_RN) if values_RN is None else np.asarray(values_RN, np.float32)
  tokens_RN = np.zeros(mask_RN.shape, np.int32) if tokens_RN is None else np.asarray(tokens_RN, np.int32)
  adv_RN, returns_RN = _advantages(
    np.asarray(rewards_R, np.float32), mask_RN, valid_R, kl_RN, np.float32(kl_coef), values_RN, tokens_RN,
    name=name, group_size=group_size, gamma=float(gamma), lam=float(lam), whiten=bool(whiten),
    positive_weight=float(positive_weight), negative_weight=float(negative_weight), grpo_eps=float(grpo_eps),
    td_weight=float(td_weight), root_td=bool(root_td),
  )
  return np.asarray(adv_RN), np.asarray(returns_RN)


@functools.partial(jax.jit, static_argnames=(
  "group_size", "global_weight", "local_weight", "weighting", "leaf_baseline"))
def _treerl(parent_BM, valid_BM, leaf_node_R, node_RN, rewards_R, row_valid_R, *, group_size, global_weight,
            local_weight, weighting, leaf_baseline):
  B, M = parent_BM.shape
  R = leaf_node_R.shape[0]
  live_R = (row_valid_R > 0) & (leaf_node_R >= 0)
  prompt_R = jnp.arange(R) // group_size
  slot_R = jnp.where(live_R, leaf_node_R, M)  # M: dropped
  reward_BM = jnp.zeros((B, M), jnp.float32).at[prompt_R, slot_R].set(rewards_R, mode="drop")
  is_leaf_BM = jnp.zeros((B, M), bool).at[prompt_R, slot_R].set(True, mode="drop")
  tree = functools.partial(treerl_advantages, global_weight=global_weight, local_weight=local_weight,
                           weighting=weighting, leaf_baseline=leaf_baseline)
  adv_BM = jax.vmap(lambda p, r, leaf, v: tree(p, r, is_leaf_N=leaf, valid_N=v))(
    parent_BM, reward_BM, is_leaf_BM, valid_BM)
  adv_RM = jnp.repeat(adv_BM, group_size, axis=0)
  return gather_to_tokens(adv_RM, jnp.where(live_R[:, None], node_RN, -1))


def treerl_token_advantages(
  parent_BM: np.ndarray, valid_BM: np.ndarray, leaf_node_R: np.ndarray, node_RN: np.ndarray,
  rewards_R: np.ndarray, row_valid_R: np.ndarray, group_size: int, *, global_weight: float = 1.0,
  local_weight: float = 1.0, weighting: str = "sqrt", leaf_baseline: str = "none",
) -> np.ndarray:
  """TreeRL per-token advantages of a tree rollout (one jitted call for the batch of trees).

  Every prompt's tree is rooted at node 0, the prompt, so V(root) is the mean outcome of all the
  prompt's leaves (TreeRL's M chains share one baseline); every token of segment s gets
  (global_weight·(V(s) − V(root)) + local_weight·(V(s) − V(parent s))) / sqrt(|L(s)|)
  (`w2s_jax.advantages.tree.treerl_advantages`).

  Args:
    parent_BM: parent of each node of prompt b's tree, −1 for the root (node 0) and padding [B, M].
    valid_BM: real nodes [B, M].
    leaf_node_R: the leaf node of each row (rows = leaves, group-major), −1 for padding rows [R].
    node_RN: the node of each completion token, −1 off the completion [R, N].
    rewards_R: outcome reward of each leaf row [R].
    row_valid_R: 1 on real rows [R].
    group_size: G, rows per prompt.
    global_weight, local_weight, weighting, leaf_baseline: see `treerl_advantages`.

  Returns:
    advantages_RN float32, 0 off the completion and on padding rows.
  """
  R = np.shape(leaf_node_R)[0]
  if R != np.shape(parent_BM)[0] * group_size:
    raise ValueError(f"{R} rows do not match {np.shape(parent_BM)[0]} trees × G={group_size}")
  return np.asarray(_treerl(
    np.asarray(parent_BM, np.int32), np.asarray(valid_BM, bool), np.asarray(leaf_node_R, np.int32),
    np.asarray(node_RN, np.int32), np.asarray(rewards_R, np.float32), np.asarray(row_valid_R, np.float32),
    group_size=int(group_size), global_weight=float(global_weight), local_weight=float(local_weight),
    weighting=weighting, leaf_baseline=leaf_baseline))


def step_index(tokens_RN: np.ndarray | jax.Array, mask_RN: np.ndarray | jax.Array,
               boundary_ids: tuple[int, ...], xp: Any = np) -> np.ndarray | jax.Array:
  """The one step-segmentation rule: step index of every completion token, −1 off the mask [R, N].

  A step ends with a boundary token (kept as its last token); the text after the last boundary is the last
  step (VinePPO, Math-Shepherd). Every other shape is derived from this: `step_ids` (jitted, on device),
  `tree_rollout.step_starts` (first token of each step) and `prm.labels.step_end_indices` (last token of
  each step of one completion).

  Args:
    tokens_RN: completion token ids [R, N].
    mask_RN: completion tokens [R, N] (a prefix of each row).
    boundary_ids: the token ids that end a step.
    xp: the array module, `numpy` (host) or `jax.numpy` (traceable).

  Returns:
    int32 [R, N]: the number of boundary tokens strictly before each token, −1 off the mask.
  """
  mask_RN = xp.asarray(mask_RN).astype(bool)
  is_b_RN = xp.isin(xp.asarray(tokens_RN), xp.asarray(boundary_ids, xp.int32)) & mask_RN
  b_RN = is_b_RN.astype(xp.int32)
  return xp.where(mask_RN, xp.cumsum(b_RN, axis=-1) - b_RN, -1).astype(xp.int32)


@functools.partial(jax.jit, static_argnames=("boundary_ids",))
def step_ids(tokens_RN: jax.Array, mask_RN: jax.Array, *, boundary_ids: tuple[int, ...]) -> jax.Array:
  """`step_index` on device (jitted): step index of every completion token, −1 off the mask [R, N]."""
  return step_index(tokens_RN, mask_RN, boundary_ids, xp=jnp)


@functools.partial(jax.jit, static_argnames=("boundary_ids", "gamma"))
def _vineppo(tokens_RN, mask_RN, rewards_R, row_valid_R, returns_RCK, rollout_mask_RCK, *, boundary_ids,
             gamma):
  R, N = mask_RN.shape
  C = returns_RCK.shape[1]
  mask_RN = mask_RN.astype(bool) & (row_valid_R[:, None] > 0)
  step_RN = step_ids(tokens_RN, mask_RN, boundary_ids=boundary_ids)
  n_steps_R = jnp.max(step_RN, axis=-1) + 1  # 0 for an empty row
  s_S = jnp.arange(N)  # at most N steps
  step_mask_RS = s_S[None] < n_steps_R[:, None]
  mc_RC = mc_step_values(returns_RCK, rollout_mask_RCK)
  has_RC = jnp.sum(rollout_mask_RCK, axis=-1) > 0
  values_RS = jnp.zeros((R, N), jnp.float32).at[:, :C].set(mc_RC[:, :N])
  known_RS = jnp.zeros((R, N), bool).at[:, :C].set(has_RC[:, :N]) & step_mask_RS
  step_rewards_RS = jnp.where(s_S[None] == n_steps_R[:, None] - 1, rewards_R[:, None], 0.0)
  adv_RS, _ = mc_step_advantages(values_RS, step_rewards_RS, known_S=known_RS, step_mask_S=step_mask_RS,
                                 gamma=gamma)
  return gather_to_tokens(adv_RS, step_RN)


def vineppo_token_advantages(
  tokens_RN: np.ndarray, mask_RN: np.ndarray, rewards_R: np.ndarray, row_valid_R: np.ndarray,
  returns_RCK: np.ndarray, rollout_mask_RCK: np.ndarray, *, boundary_ids: tuple[int, ...],
  gamma: float = 1.0,
) -> np.ndarray:
  """VinePPO per-token advantages (one jitted call): A_i = r_i + γ V̂(s_{i+1}) − V̂(s_i) on every token of
  step i, with V̂(s_i) the mean return of the K rollouts from the state before step i.

  Steps are split at `boundary_ids` (`step_ids`); r_i is 0 except on the last step (the outcome); the value
  after the last step is 0. Values of steps without rollouts (i ≥ C, VinePPO's
  `max_step_for_value_estimation`) are filled from the end, V(s_i) = r_i + γ V(s_{i+1})
  (`mc_step_advantages`).

  Args:
    tokens_RN: completion token ids [R, N].
    mask_RN: completion tokens [R, N].
    rewards_R: outcome rewards [R].
    row_valid_R: 1 on rows that take part [R].
    returns_RCK: return of rollout k from the state before step c [R, C, K].
    rollout_mask_RCK: 1 where that rollout was drawn [R, C, K].
    boundary_ids: the token ids that end a step.
    gamma: discount.

  Returns:
    advantages_RN float32, 0 off the mask.
  """
  if not boundary_ids:
    raise ValueError("vineppo needs at least one step-boundary token id (advantage.step_boundary)")
  return np.asarray(_vineppo(
    np.asarray(tokens_RN, np.int32), np.asarray(mask_RN, bool), np.asarray(rewards_R, np.float32),
    np.asarray(row_valid_R, np.float32), np.asarray(returns_RCK, np.float32),
    np.asarray(rollout_mask_RCK, np.float32), boundary_ids=tuple(int(t) for t in boundary_ids),
    gamma=float(gamma)))


def rft_keep(correct_R: np.ndarray, threshold: float = 1.0) -> np.ndarray:
  """Rejection sampling (RAFT, Dong et al. 2023; STaR, Zelikman et al. 2022): keep samples whose task
  score reaches `threshold`. Training on them with A = 1 and the `reinforce` loss is SFT on the kept set."""
  return np.asarray(correct_R) >= threshold


def minibatches(num_rows: int, minibatch_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
  """A random partition of the rows into minibatches of `minibatch_rows` (must divide `num_rows`)."""
  if minibatch_rows <= 0 or num_rows % minibatch_rows:
    raise ValueError(
      f"train.minibatch_size={minibatch_rows} must divide the rollout's {num_rows} rows "
      "(rollout.prompts_per_step × rollout.group_size)"
    )
  perm = rng.permutation(num_rows)
  return [perm[i : i + minibatch_rows] for i in range(0, num_rows, minibatch_rows)]


def token_kl(old_logp_RN: np.ndarray, ref_logp_RN: np.ndarray, mask_RN: np.ndarray, kind: str) -> np.ndarray:
  """NumPy view of `sequence_kl`."""
  return np.asarray(sequence_kl(old_logp_RN, ref_logp_RN, np.asarray(mask_RN, np.float32), kind=kind))
