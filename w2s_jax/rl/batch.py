"""From a rollout to a train batch: KL in the reward, advantages by name, RFT filtering, minibatches.

Advantage estimators, by the names of TRL/verl (all in `w2s_jax.advantages`):

- `grpo`, `dr_grpo`, `rloo`, `reinforce`, `psr`, `nsr`, `w_reinforce`: from rewards [B, G], one value per
  response, spread over its tokens;
- `reinforce_pp_baseline`: group mean subtracted, then whitened over the batch's tokens;
- `reinforce_pp`: token rewards [R, N] (outcome on the last token, − β·KL per token), returns whitened;
- `gae`: token rewards and the critic's values; also gives the value targets (`returns`);
- `rft`: rejection-sampling SFT, A = 1 on correct samples and the others masked out (see `rft_keep`).

KL in the reward (`kl_where="reward"`, verl `use_kl_in_reward`, TRL RLOO): the token-level estimators
get r_t −= β·KL_t; the sequence-level ones r_i −= β·Σ_t KL_{i,t} (TRL RLOO's sequence sum).

Legend: B prompts, G samples per prompt, R = B·G rows, N completion slots.
"""

from __future__ import annotations

import functools

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
from w2s_jax.losses.policy import kl_penalty

GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce", "psr", "nsr", "w_reinforce")
TOKEN_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "gae")
ADVANTAGES = (*GROUP_ESTIMATORS, *TOKEN_ESTIMATORS, "rft")


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
  "name", "group_size", "gamma", "lam", "whiten", "positive_weight", "negative_weight", "grpo_eps"))
def _advantages(
  rewards_R, mask_RN, group_valid_R, kl_RN, kl_coef, values_RN, *, name, group_size, gamma, lam, whiten,
  positive_weight, negative_weight, grpo_eps,
):
  R, _ = mask_RN.shape
  B = R // group_size
  valid_BG = group_valid_R.reshape(B, group_size)
  token_mask_RN = mask_RN * group_valid_R[:, None]
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
) -> tuple[np.ndarray, np.ndarray]:
  """Per-token advantages of a rollout by estimator name (see the module table).

  Args:
    name: the estimator (not `rft`: see `rft_keep`).
    rewards_R: one reward per row, rows group-major [R].
    completion_mask_RN: the completion tokens [R, N].
    group_size: G.
    group_valid_R: rows that take part (padding groups are 0) [R]; default all.
    kl_RN: per-token KL of the sampling policy to the reference (KL in the reward), or None.
    kl_coef: β of the KL in the reward.
    values_RN: the critic's V(s_t) (`gae` only).
    gamma, lam, whiten: GAE's γ, λ and batch whitening (`reinforce_pp` uses γ).
    positive_weight, negative_weight: λ₊, λ₋ of `w_reinforce`.
    grpo_eps: ε added to the group std of `grpo`.

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
  if name == "gae" and values_RN is None:
    raise ValueError("advantage 'gae' needs the critic's values_RN")
  valid_R = np.ones(R, np.float32) if group_valid_R is None else np.asarray(group_valid_R, np.float32)
  kl_RN = np.zeros_like(mask_RN) if kl_RN is None else np.asarray(kl_RN, np.float32)
  values_RN = np.zeros_like(mask_RN) if values_RN is None else np.asarray(values_RN, np.float32)
  adv_RN, returns_RN = _advantages(
    np.asarray(rewards_R, np.float32), mask_RN, valid_R, kl_RN, np.float32(kl_coef), values_RN, name=name,
    group_size=group_size, gamma=float(gamma), lam=float(lam), whiten=bool(whiten),
    positive_weight=float(positive_weight), negative_weight=float(negative_weight), grpo_eps=float(grpo_eps),
  )
  return np.asarray(adv_RN), np.asarray(returns_RN)


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
