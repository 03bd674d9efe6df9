"""Token-level advantage estimation: GAE, outcome rewards placed on tokens, masked whitening.

Shapes: `N` responses (N = B·G when they come in groups), `L` response tokens. `mask_NL` is 1 on the
response tokens that are trained on and 0 on padding (and, in multi-turn data, on tool/observation
tokens). Masked positions are *skipped*: the recursion passes its carry through them unchanged, as in
verl's `compute_gae_advantage_return`, so right padding and interior gaps both work. Outputs are 0 on
masked positions.

Terminal rule: the value after the last valid token is 0 (the response ended: no bootstrap), as in
verl. Pass `bootstrap_value_N` for responses truncated by the length limit if you want to bootstrap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_same_shape(**arrays: jax.Array) -> None:
  shapes = {name: tuple(a.shape) for name, a in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"expected equal shapes, got {shapes}")
  if len(next(iter(shapes.values()))) != 2:
    raise ValueError(f"expected rank-2 [N, L] arrays, got {shapes}")


def masked_mean(values_NL: jax.Array, mask_NL: jax.Array, axis: int | None = None) -> jax.Array:
  """Σ m·x / Σ m over `axis` (all axes when None); 0 where the mask is empty."""
  mask_NL = mask_NL.astype(jnp.float32)
  total = jnp.sum(jnp.where(mask_NL > 0, values_NL, 0.0), axis=axis)
  count = jnp.sum(mask_NL, axis=axis)
  return total / jnp.maximum(count, 1.0)


def masked_whiten(
  values_NL: jax.Array, mask_NL: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8
) -> jax.Array:
  """Normalises values over all valid tokens of the batch (verl `masked_whiten`, TRL `masked_whiten`).

  w = (x − mean) / sqrt(var + eps), mean and var over the masked entries; var is unbiased
  (× n/(n−1)), as in verl. With `shift_mean=False` the mean is added back. Where n ≤ 1, verl raises;
  here the Bessel factor is taken as 1 (a single token whitens to 0). Masked entries come out 0.

  Args:
    values_NL: values [N, L] (any shape works; the mask must match it).
    mask_NL: 1 on valid entries [N, L].
    shift_mean: subtract the mean (True) or keep it.
    eps: added to the variance.

  Returns:
    whitened values, same shape, 0 off the mask.
  """
  values_NL = values_NL.astype(jnp.float32)
  valid_NL = mask_NL > 0
  count = jnp.sum(valid_NL.astype(jnp.float32))
  mean = masked_mean(values_NL, mask_NL)
  centered_NL = jnp.where(valid_NL, values_NL - mean, 0.0)
  var = jnp.sum(jnp.square(centered_NL)) / jnp.maximum(count - 1.0, 1.0)
  whitened_NL = centered_NL * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    whitened_NL = whitened_NL + mean
  return jnp.where(valid_NL, whitened_NL, 0.0)


def last_token_mask(mask_NL: jax.Array) -> jax.Array:
  """1.0 at the last valid token of each row, 0 elsewhere (all 0 for an empty row) [N, L]."""
  valid_NL = mask_NL > 0
  length = valid_NL.shape[-1]
  positions_L = jnp.arange(length)
  last_N = jnp.max(jnp.where(valid_NL, positions_L[None, :], -1), axis=-1)
  return (positions_L[None, :] == last_N[:, None]).astype(jnp.float32)


def outcome_token_rewards(
  rewards_N: jax.Array,
  mask_NL: jax.Array,
  kl_NL: jax.Array | None = None,
  *,
  kl_coef: float = 0.0,
) -> jax.Array:
  """Token rewards of an outcome-reward RL step: r_t = 1[t = last valid] · r − β · KL_t.

  The KL-in-reward form of PPO/RLHF, RLOO and REINFORCE++ (verl `apply_kl_penalty`; reference/formulas.md
  §8.6, §8.9): pass per-token `kl_NL` (usually k1 = log π_old − log π_ref) and `kl_coef` β.

  Args:
    rewards_N: one scalar reward per response [N].
    mask_NL: response-token mask [N, L].
    kl_NL: optional per-token KL estimate [N, L].
    kl_coef: β.

  Returns:
    token_rewards_NL [N, L], 0 off the mask.
  """
  if rewards_N.shape != mask_NL.shape[:1]:
    raise ValueError(f"rewards_N {rewards_N.shape} must be [N] for mask_NL {mask_NL.shape}")
  token_rewards_NL = last_token_mask(mask_NL) * rewards_N.astype(jnp.float32)[:, None]
  if kl_NL is not None:
    _check_same_shape(kl_NL=kl_NL, mask_NL=mask_NL)
    token_rewards_NL = token_rewards_NL - kl_coef * kl_NL.astype(jnp.float32)
  return jnp.where(mask_NL > 0, token_rewards_NL, 0.0)


def discounted_returns(token_rewards_NL: jax.Array, mask_NL: jax.Array, *, gamma: float = 1.0) -> jax.Array:
  """Reward-to-go G_t = Σ_{s ≥ t, valid} γ^{#valid tokens between} r_s, skipping masked tokens.

  Args:
    token_rewards_NL: per-token rewards [N, L] (ignored off the mask).
    mask_NL: response-token mask [N, L].
    gamma: discount γ.

  Returns:
    returns_NL [N, L], 0 off the mask.
  """
  _check_same_shape(token_rewards_NL=token_rewards_NL, mask_NL=mask_NL)
  rewards_LN = token_rewards_NL.astype(jnp.float32).T
  valid_LN = (mask_NL > 0).T

  def step(running_N, xs):
    reward_N, valid_N = xs
    running_N = jnp.where(valid_N, reward_N + gamma * running_N, running_N)
    return running_N, jnp.where(valid_N, running_N, 0.0)

  init_N = jnp.zeros(rewards_LN.shape[1], jnp.float32)
  _, returns_LN = jax.lax.scan(step, init_N, (rewards_LN, valid_LN), reverse=True)
  return returns_LN.T


def gae_advantages(
  rewards_BL: jax.Array,
  values_BL: jax.Array,
  mask_BL: jax.Array,
  *,
  gamma: float = 1.0,
  lam: float = 0.95,
  bootstrap_value_B: jax.Array | None = None,
  whiten: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438).

    δ_t = r_t + γ·V_{t+1} − V_t,      Â_t = δ_t + γλ·Â_{t+1},      R_t = Â_t + V_t

  computed right to left with `lax.scan(reverse=True)`. t+1 is the next *valid* token (masked tokens are
  skipped); after the last valid token V = `bootstrap_value_B` (default 0: the response terminated) and
  Â = 0. λ = 1 gives Â_t = Σ_{s≥t} γ^{s−t} r_s − V_t (Monte Carlo); λ = 0 gives the TD error δ_t.

  verl (`compute_gae_advantage_return`) and TRL (`PPOTrainer`) whiten the advantages over the batch after
  computing the returns: pass `whiten=True` for that (the returns are never whitened). verl defaults:
  γ = 1, λ = 1; TRL: γ = 1, λ = 0.95.

  Args:
    rewards_BL: per-token rewards [B, L], e.g. from `outcome_token_rewards`.
    values_BL: value-head predictions V_t [B, L].
    mask_BL: response-token mask [B, L].
    gamma: discount γ.
    lam: GAE λ.
    bootstrap_value_B: value after the last token [B]; None for 0.
    whiten: whiten the advantages over the valid tokens of the batch (`masked_whiten`).

  Returns:
    (advantages_BL, returns_BL), both 0 off the mask.
  """
  _check_same_shape(rewards_BL=rewards_BL, values_BL=values_BL, mask_BL=mask_BL)
  rewards_LB = rewards_BL.astype(jnp.float32).T
  values_LB = values_BL.astype(jnp.float32).T
  valid_LB = (mask_BL > 0).T

  def step(carry, xs):
    next_value_B, next_adv_B = carry
    reward_B, value_B, valid_B = xs
    delta_B = reward_B + gamma * next_value_B - value_B
    adv_B = delta_B + gamma * lam * next_adv_B
    carry = (jnp.where(valid_B, value_B, next_value_B), jnp.where(valid_B, adv_B, next_adv_B))
    return carry, jnp.where(valid_B, adv_B, 0.0)

  batch = rewards_LB.shape[1]
  if bootstrap_value_B is None:
    last_value_B = jnp.zeros((batch,), jnp.float32)
  else:
    if bootstrap_value_B.shape != (batch,):
      raise ValueError(f"bootstrap_value_B {bootstrap_value_B.shape} must be [B] = ({batch},)")
    last_value_B = bootstrap_value_B.astype(jnp.float32)
  init = (last_value_B, jnp.zeros((batch,), jnp.float32))
  _, adv_LB = jax.lax.scan(step, init, (rewards_LB, values_LB, valid_LB), reverse=True)
  adv_BL = adv_LB.T
  valid_BL = mask_BL > 0
  returns_BL = jnp.where(valid_BL, adv_BL + values_BL.astype(jnp.float32), 0.0)
  if whiten:
    adv_BL = masked_whiten(adv_BL, mask_BL)
  return adv_BL, returns_BL
