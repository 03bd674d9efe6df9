"""The RL objective for the one train step, and the policy/critic forward passes it shares with rollouts.

`rl_objective(...)` returns `objective(model, batch, rng) -> (loss_sum, weight, metric_sums)` for
`w2s_jax.train.step.make_train_step`. The batch (built by `w2s_jax.rl.batch.build_batch`) holds, for R rows:

| key               | shape  | meaning                                                            |
|-------------------|--------|--------------------------------------------------------------------|
| `tokens`          | [R, S] | left-padded prompt + completion (sampler slot layout)              |
| `mask`            | [R, S] | 1 on real tokens                                                    |
| `completion_mask` | [R, N] | 1 on the completion tokens that are trained (N = last N slots)     |
| `old_logp`        | [R, N] | log π_old of the completion tokens (sampler or recomputed)         |
| `advantages`      | [R, N] | per-token advantages                                               |
| `ref_logp`        | [R, N] | log π_ref, only when the KL penalty is in the loss                 |
| `returns`, `old_values` | [R, N] | value targets and the critic's rollout values (PPO with GAE) |

Grouped layout: every array may instead be [U, G, ...] — U groups of G rows whose prompt slots (the
first S − N of `tokens` and `mask`) are the same (`groups_share_prompt`, checked by the caller). The
objective then runs each group's prompt once (`models.shared_prefix`) and equals the [R, ...] layout up to
rounding; the micro-batch and data-parallel splits cut whole groups.

Per token: ℓ = policy_loss(kind) + β·KL_k(π_θ ‖ π_ref) (when in the loss); with a critic,
+ c_v · ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²) (PPO's clipped value loss, verl `compute_value_loss`).
Both are reduced by the one named reduction, so they share its weight.

Legend: R rows, S = P + N slots, N completion slots, V vocab.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.losses.aggregation import aggregate, safe_ratio
from w2s_jax.losses.policy import POLICY_LOSSES, kl_penalty, policy_loss
from w2s_jax.models.heads import ValueModel
from w2s_jax.models.presets import ModelConfig
from w2s_jax.models.shared_prefix import shared_prefix_hidden
from w2s_jax.models.transformer import Transformer
from w2s_jax.sampling.score import score_fn, token_positions
from w2s_jax.train.step import Batch, Objective


class ActorCritic(nnx.Module):
  """A policy and a separate critic (its own backbone + `ValueHead`), trained by one optimizer.

  The critic's gradient never reaches the policy (separate parameters), so one joint step equals the
  two updates of a PPO actor and critic (up to the joint global-norm clip).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.policy = Transformer(cfg, rngs=rngs)
    self.critic = ValueModel(cfg, rngs=rngs)


def policy_of(model: nnx.Module) -> Transformer:
  """The language model of a `Transformer` or an `ActorCritic`."""
  return model.policy if isinstance(model, ActorCritic) else model


def completion_logprobs(
  policy: Transformer, tokens_RS: jax.Array, mask_RS: jax.Array, num_new: int, temperature: float = 1.0,
  group_size: int = 1,
) -> tuple[jax.Array, jax.Array]:
  """Log-probs and entropies of the last `num_new` slots' tokens under softmax(logits / temperature).

  `sampling.score_fn` with `num_last=num_new`: only the slots predicting those tokens are projected to
  the vocabulary. With `group_size` G > 1 the rows are groups of G consecutive rows whose first
  S - num_new slots (prompt tokens and mask) are the same — the caller checks it (`groups_share_prompt`) —
  and each group's prompt runs once (`models.shared_prefix`); the result equals G = 1 up to rounding.

  Returns:
    (logp_RN, entropy_RN), float32 (0 at padding slots).
  """
  if group_size == 1:
    return score_fn(policy, tokens_RS, mask_RS, temperature=temperature, num_last=num_new)
  R, S = tokens_RS.shape
  if R % group_size or num_new >= S:
    raise ValueError(f"{R} rows of {S} slots do not split into groups of {group_size} sharing a prompt "
                     f"before the last {num_new} slots")
  U, G, P = R // group_size, group_size, S - num_new
  mask_RS = mask_RS.astype(jnp.int32)
  tok, seg, pos = (a.reshape(U, G, S) for a in (tokens_RS, mask_RS, token_positions(mask_RS)))
  hp_UPD, hc_UGND = shared_prefix_hidden(
    policy, tok[:, 0, :P], tok[:, :, P:], prompt_positions_NP=pos[:, 0, :P],
    prompt_segment_ids_NP=seg[:, 0, :P], cont_positions_NGC=pos[:, :, P:], cont_segment_ids_NGC=seg[:, :, P:])
  D = hp_UPD.shape[-1]
  last_UG1D = jnp.broadcast_to(hp_UPD[:, None, P - 1 :], (U, G, 1, D))
  hidden_RND = jnp.concatenate([last_UG1D, hc_UGND[:, :, :-1]], axis=2).reshape(R, num_new, D)
  logp_RNV = jax.nn.log_softmax(policy.logits_from_hidden(hidden_RND) / temperature, axis=-1)
  lp_RN = jnp.take_along_axis(logp_RNV, tokens_RS[:, P:, None], axis=-1)[..., 0]
  ent_RN = -jnp.sum(jnp.exp(logp_RNV) * logp_RNV, axis=-1)
  valid_RN = (mask_RS[:, P:] > 0) & (mask_RS[:, P - 1 : S - 1] > 0)  # as score_fn: real after real
  return jnp.where(valid_RN, lp_RN, 0.0), jnp.where(valid_RN, ent_RN, 0.0)


def groups_share_prompt(tokens_RS: np.ndarray, mask_RS: np.ndarray, num_new: int, group_size: int) -> bool:
  """Whether every group of `group_size` consecutive rows has the same prompt slots (tokens and mask)."""
  R, S = np.shape(tokens_RS)
  if group_size < 2 or R % group_size or num_new >= S:
    return False
  P = S - num_new
  for a in (np.asarray(tokens_RS), np.asarray(mask_RS)):
    prompt = a[:, :P].reshape(R // group_size, group_size, P)
    if not (prompt == prompt[:, :1]).all():
      return False
  return True


def critic_values(critic: ValueModel, tokens_RS: jax.Array, mask_RS: jax.Array, num_new: int) -> jax.Array:
  """V(s_t) for each completion token t: the critic's value read at the slot before it [R, N]."""
  S = tokens_RS.shape[1]
  seg_RS = mask_RS.astype(jnp.int32)
  values_RS = critic(tokens_RS, positions_BL=token_positions(seg_RS), segment_ids_BL=seg_RS)
  return values_RS[:, S - num_new - 1 : S - 1]


@functools.partial(jax.jit, static_argnames=("graphdef", "num_new", "temperature", "group_size"))
def completion_logprobs_jit(
  graphdef: nnx.GraphDef, params: Any, tokens_RS: jax.Array, mask_RS: jax.Array, *, num_new: int,
  temperature: float, group_size: int = 1,
) -> jax.Array:
  """Jitted `completion_logprobs` of a Transformer's (graphdef, params): log-probs [R, N]."""
  return completion_logprobs(nnx.merge(graphdef, params), tokens_RS, mask_RS, num_new, temperature,
                             group_size)[0]


@functools.partial(jax.jit, static_argnames=("graphdef", "num_new"))
def critic_values_jit(
  graphdef: nnx.GraphDef, params: Any, tokens_RS: jax.Array, mask_RS: jax.Array, *, num_new: int
) -> jax.Array:
  """Jitted `critic_values` of an `ActorCritic`'s (graphdef, params) [R, N]."""
  return critic_values(nnx.merge(graphdef, params).critic, tokens_RS, mask_RS, num_new)


def _value_loss_sum(model: nnx.Module, batch: Batch, value_clip: float | None, reduction: str) -> jax.Array:
  """Σ of ½(V − returns)² (PPO's clipped form when `value_clip` is set), aggregated like the loss."""
  if not isinstance(model, ActorCritic):
    raise ValueError("value_coef > 0 needs an ActorCritic model (config loss.value_coef / advantage gae)")
  mask_RN = batch["completion_mask"]
  values_RN = critic_values(model.critic, batch["tokens"], batch["mask"], mask_RN.shape[1])
  returns_RN = batch["returns"]
  v_loss_RN = jnp.square(values_RN - returns_RN)
  if value_clip is not None:
    old_RN = batch["old_values"]
    clipped_RN = old_RN + jnp.clip(values_RN - old_RN, -value_clip, value_clip)
    v_loss_RN = jnp.maximum(v_loss_RN, jnp.square(clipped_RN - returns_RN))
  return aggregate(0.5 * v_loss_RN, mask_RN, reduction)[0]


def rl_objective(
  *,
  loss_kind: str = "ppo",
  reduction: str = "token-mean",
  clip_eps: float | None = None,
  clip_eps_high: float | None = None,
  dual_clip_c: float | None = None,
  topr_level: str = "sequence",
  use_is_ratio: bool = False,
  positive_weight: float = 1.0,
  negative_weight: float = 1.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  temperature: float = 1.0,
  value_coef: float = 0.0,
  value_clip: float | None = None,
) -> Objective:
  """The policy-gradient objective of a rollout batch (see the module docstring).

  Args:
    loss_kind: a `w2s_jax.losses.POLICY_LOSSES` kind (`ppo`, `dapo`, `gspo`, `cispo`, `topr`, `reinforce`).
    reduction: `token-mean`, `seq-mean-token-mean`, `seq-mean-token-sum` or `seq-mean-token-sum-norm`.
    clip_eps, clip_eps_high, dual_clip_c, topr_level, use_is_ratio, positive_weight, negative_weight:
      passed to `policy_loss`.
    kl_coef: β of the KL penalty in the loss (0 = none; batches then need no `ref_logp`).
    kl_kind: `k1`, `k2` or `k3`.
    temperature: the sampling temperature (log-probs are of softmax(logits / T), as the sampler's).
    value_coef: c_v; > 0 needs an `ActorCritic` model and `returns`/`old_values` in the batch.
    value_clip: ε_v of the clipped value loss, or None for the plain squared error.

  Returns:
    `objective(model, batch, rng) -> (loss_sum, weight, metric_sums)`.
  """
  if loss_kind not in POLICY_LOSSES:
    raise ValueError(f"unknown loss kind {loss_kind!r}; choose one of {sorted(POLICY_LOSSES)}")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0 for a policy-gradient loss, got {temperature}")

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    group_size = 1
    if batch["tokens"].ndim == 3:  # grouped layout [U, G, ...]: each group's prompt runs once
      group_size = batch["tokens"].shape[1]
      batch = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
    mask_RN = batch["completion_mask"]
    num_new = mask_RN.shape[1]
    logp_RN, entropy_RN = completion_logprobs(
      policy_of(model), batch["tokens"], batch["mask"], num_new, temperature, group_size
    )
    loss_RN, stats = policy_loss(
      logp_RN, batch["old_logp"], batch["advantages"], mask_RN, kind=loss_kind, clip_eps=clip_eps,
      clip_eps_high=clip_eps_high, dual_clip_c=dual_clip_c, topr_level=topr_level,
      use_is_ratio=use_is_ratio, positive_weight=positive_weight, negative_weight=negative_weight,
    )
    pg_sum, weight = aggregate(loss_RN, mask_RN, reduction)
    loss_sum = pg_sum
    token_entropy = safe_ratio(*aggregate(jax.lax.stop_gradient(entropy_RN), mask_RN, "token-mean"))
    sums = {"pg_loss": pg_sum, "entropy": token_entropy * weight}  # entropy: mean per token
    if kl_coef > 0:
      kl_RN, _ = kl_penalty(logp_RN, batch["ref_logp"], kl_kind, mask_BL=mask_RN)
      kl_sum, _ = aggregate(kl_RN, mask_RN, reduction)  # linear: Σ of aggregates = aggregate of Σ
      loss_sum = loss_sum + kl_coef * kl_sum
      sums["kl_ref"] = kl_sum
    if value_coef > 0:
      v_sum = _value_loss_sum(model, batch, value_clip, reduction)
      loss_sum = loss_sum + value_coef * v_sum
      sums["value_loss"] = v_sum
    # policy_loss's metrics are means over the micro-batch: weight them to sums like the loss.
    for name in ("clipfrac", "approx_kl", "ratio_mean"):
      sums[name] = stats[name] * weight
    return loss_sum, weight, sums

  return objective
