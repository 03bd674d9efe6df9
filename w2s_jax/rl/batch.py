"""From a rollout to a train batch: KL in the reward, advantages by name, RFT filtering, minibatches.

Advantage estimators are resolved in `w2s_jax.advantages.registry.ADVANTAGES` (`advantage.name` → an
`Estimator`: the pure function, how a rollout feeds it, what it needs). This module turns a rollout's
NumPy arrays into the registry's inputs and runs the entry in one jitted call:

- `compute_advantages`: estimators fed by rewards, masks, KL, critic values and token ids (`grpo`,
  `dr_grpo`, `rloo`, `reinforce`, `psr`, `nsr`, `w_reinforce`, `reinforce_pp`, `reinforce_pp_baseline`,
  `gae`, `tempo`);
- `treerl_token_advantages`: `treerl` on the entropy-forked rollout tree (`tree_rollout`);
- `vineppo_token_advantages`: `vineppo` from K Monte Carlo rollouts per step boundary
  (`tree_rollout.mc_step_returns`);
- `rft`: rejection-sampling SFT, A = 1 on correct samples and the others masked out (see `rft_keep`).

Legend: B prompts, G samples per prompt, R = B·G rows, N completion slots, M tree nodes per prompt (node 0
is the prompt), C steps with a Monte Carlo value per response, K rollouts per step.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from w2s_jax.advantages.registry import ADVANTAGES, AdvantageOptions, RolloutAdvantageInputs
from w2s_jax.advantages.steps import step_ids, step_index
from w2s_jax.losses.policy import kl_penalty

__all__ = [
  "ADVANTAGES", "check_advantage_name", "compute_advantages", "group_minibatches", "minibatches", "rft_keep",
  "sequence_kl", "step_ids", "step_index", "token_kl", "treerl_token_advantages", "vineppo_token_advantages",
]

# what each rollout input is called in an error, and where it comes from
_NEEDS_HELP = {
  "values": "the critic's values_RN",
  "tokens": "the completion tokens_RN (its prefix tree)",
}


def check_advantage_name(name: str) -> None:
  if name not in ADVANTAGES:
    raise ValueError(f"unknown advantage estimator {name!r}; choose one of {list(ADVANTAGES)}")


@functools.partial(jax.jit, static_argnames=("kind",))
def sequence_kl(
  old_logp_RN: jax.Array, ref_logp_RN: jax.Array, mask_RN: jax.Array, *, kind: str
) -> jax.Array:
  """Per-token KL estimate of the sampling policy against the reference, 0 off the mask [R, N]."""
  return kl_penalty(old_logp_RN, ref_logp_RN, kind, mask_BL=mask_RN)[0]


@functools.partial(jax.jit, static_argnames=("name", "options"))
def _estimate(batch: RolloutAdvantageInputs, *, name: str, options: AdvantageOptions):
  return ADVANTAGES[name](batch, options)


def _inputs(
  rewards_R: np.ndarray, mask_RN: np.ndarray, valid_R: np.ndarray | None, *, kl_RN: np.ndarray | None = None,
  kl_coef: float = 0.0, values_RN: np.ndarray | None = None, tokens_RN: np.ndarray | None = None,
  tree: tuple[np.ndarray, ...] | None = None, mc_returns: tuple[np.ndarray, np.ndarray] | None = None,
) -> RolloutAdvantageInputs:
  """NumPy rollout arrays → the registry's inputs (float32 masks, zero KL unless given)."""
  mask_RN = np.asarray(mask_RN, np.float32)
  valid_R = np.ones(mask_RN.shape[0], np.float32) if valid_R is None else np.asarray(valid_R, np.float32)
  kl_RN = np.zeros_like(mask_RN) if kl_RN is None else np.asarray(kl_RN, np.float32)
  return RolloutAdvantageInputs(
    np.asarray(rewards_R, np.float32), mask_RN, valid_R, kl_RN, np.float32(kl_coef),
    values_RN=None if values_RN is None else np.asarray(values_RN, np.float32),
    tokens_RN=None if tokens_RN is None else np.asarray(tokens_RN, np.int32), tree=tree,
    mc_returns=mc_returns)


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
  """Per-token advantages of a rollout by estimator name (`ADVANTAGES`).

  Args:
    name: the estimator (not `rft`: see `rft_keep`; not `treerl`/`vineppo`, which need their rollout's
      trees: `treerl_token_advantages`, `vineppo_token_advantages`).
    rewards_R: one reward per row, rows group-major [R].
    completion_mask_RN: the completion tokens [R, N].
    group_size: G.
    group_valid_R: rows that take part (padding groups are 0) [R]; default all.
    kl_RN: per-token KL of the sampling policy to the reference (KL in the reward), or None.
    kl_coef: β of the KL in the reward.
    values_RN: the critic's V(s_t) (estimators that need "values": `gae`).
    gamma, lam, whiten: GAE's γ, λ and batch whitening (`reinforce_pp` uses γ).
    positive_weight, negative_weight: λ₊, λ₋ of `w_reinforce`.
    grpo_eps: ε added to the group std of `grpo` and `tempo`.
    tokens_RN: the completion token ids [R, N] (estimators that need "tokens": `tempo`'s prefix tree).
    td_weight, root_td: `tempo_advantages`' TD coefficient and root-branch choice.

  Returns:
    (advantages_RN, returns_RN) float32; returns are GAE's value targets (0 for other estimators).
  """
  check_advantage_name(name)
  needs = ADVANTAGES[name].needs
  if "keep" in needs:
    raise ValueError(f"{name!r} has no advantages: build its batch with rft_keep (see build_batch)")
  mask_RN = np.asarray(completion_mask_RN, np.float32)
  R = mask_RN.shape[0]
  if R % group_size:
    raise ValueError(f"{R} rows do not split into groups of {group_size}")
  if "tree" in needs or "mc_returns" in needs:
    raise ValueError(f"advantage {name!r} needs its rollout's trees: use {name}_token_advantages")
  given = {"values": values_RN, "tokens": tokens_RN}
  for need, array in given.items():
    if need in needs and array is None:
      raise ValueError(f"advantage {name!r} needs {_NEEDS_HELP[need]}")
  batch = _inputs(rewards_R, mask_RN, group_valid_R, kl_RN=kl_RN, kl_coef=kl_coef, values_RN=values_RN,
                  tokens_RN=tokens_RN)
  options = AdvantageOptions(
    group_size=int(group_size), gamma=float(gamma), lam=float(lam), whiten=bool(whiten),
    positive_weight=float(positive_weight), negative_weight=float(negative_weight), grpo_eps=float(grpo_eps),
    td_weight=float(td_weight), root_td=bool(root_td))
  adv_RN, returns_RN = _estimate(batch, name=name, options=options)
  return np.asarray(adv_RN), np.asarray(returns_RN)


def treerl_token_advantages(
  parent_BM: np.ndarray, valid_BM: np.ndarray, leaf_node_R: np.ndarray, node_RN: np.ndarray,
  rewards_R: np.ndarray, row_valid_R: np.ndarray, group_size: int, *, global_weight: float = 1.0,
  local_weight: float = 1.0, weighting: str = "sqrt", leaf_baseline: str = "none",
) -> np.ndarray:
  """TreeRL per-token advantages of a tree rollout (`ADVANTAGES["treerl"]`, one jitted call).

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
  node_RN = np.asarray(node_RN, np.int32)
  tree = (np.asarray(parent_BM, np.int32), np.asarray(valid_BM, bool), np.asarray(leaf_node_R, np.int32),
          node_RN)
  batch = _inputs(rewards_R, node_RN >= 0, row_valid_R, tree=tree)
  options = AdvantageOptions(
    group_size=int(group_size), global_weight=float(global_weight), local_weight=float(local_weight),
    weighting=weighting, leaf_baseline=leaf_baseline)
  return np.asarray(_estimate(batch, name="treerl", options=options)[0])


def vineppo_token_advantages(
  tokens_RN: np.ndarray, mask_RN: np.ndarray, rewards_R: np.ndarray, row_valid_R: np.ndarray,
  returns_RCK: np.ndarray, rollout_mask_RCK: np.ndarray, *, boundary_ids: tuple[int, ...],
  gamma: float = 1.0,
) -> np.ndarray:
  """VinePPO per-token advantages (`ADVANTAGES["vineppo"]`, one jitted call): A_i = r_i + γ V̂(s_{i+1}) −
  V̂(s_i) on every token of step i, with V̂(s_i) the mean return of the K rollouts from the state before
  step i.

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
  batch = _inputs(
    rewards_R, np.asarray(mask_RN, bool), row_valid_R, tokens_RN=tokens_RN,
    mc_returns=(np.asarray(returns_RCK, np.float32), np.asarray(rollout_mask_RCK, np.float32)))
  options = AdvantageOptions(boundary_ids=tuple(int(t) for t in boundary_ids), gamma=float(gamma))
  return np.asarray(_estimate(batch, name="vineppo", options=options)[0])


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


def group_minibatches(num_rows: int, minibatch_rows: int, rng: np.random.Generator, *, group_size: int
                      ) -> list[np.ndarray]:
  """A random partition of the rows into minibatches of whole groups (`train.group_minibatches`): the
  groups are shuffled, each group's G rows stay together, so every update can run each prompt once."""
  if minibatch_rows <= 0 or num_rows % minibatch_rows or minibatch_rows % group_size:
    raise ValueError(
      f"train.minibatch_size={minibatch_rows} must divide the rollout's {num_rows} rows and be a multiple "
      f"of rollout.group_size={group_size} (train.group_minibatches)"
    )
  groups = [g * group_size + np.arange(group_size) for g in rng.permutation(num_rows // group_size)]
  per = minibatch_rows // group_size
  return [np.concatenate(groups[i : i + per]) for i in range(0, len(groups), per)]


def token_kl(old_logp_RN: np.ndarray, ref_logp_RN: np.ndarray, mask_RN: np.ndarray, kind: str) -> np.ndarray:
  """NumPy view of `sequence_kl`."""
  return np.asarray(sequence_kl(old_logp_RN, ref_logp_RN, np.asarray(mask_RN, np.float32), kind=kind))
