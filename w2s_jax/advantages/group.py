"""Outcome-reward advantages: REINFORCE, RLOO, GRPO, Dr.GRPO, W-REINFORCE, REINFORCE++.

Shape legend: `B` prompts, `G` sampled responses per prompt (the group), `N = B·G` responses, `L` response
tokens. Group estimators take one scalar reward per response as `rewards_BG` [B, G] (row b is the group
of prompt b; reshape a flat `[B·G]` vector with `rewards.reshape(B, G)`, group-major as samplers emit
it) and return sequence-level advantages [B, G]; `broadcast_to_tokens` spreads them over a token mask.

`mask_BG` (optional, [B, G]) marks the responses that exist; the others are left out of the group
statistics and get advantage 0, so groups of different sizes fit one array (verl groups by uid).

Edge cases, all without NaN:
- a group whose valid rewards are all equal gets advantage exactly 0 (no rounding residue from the mean);
- a group of one valid response gets mean 0 and std 1, i.e. its raw reward (verl convention; TRL would
  give NaN/0), so G = 1 degrades to plain REINFORCE instead of silently training nothing;
- a group with no valid response gets 0.

All statistics are computed in float32; advantages are returned in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2s_jax.advantages.gae import discounted_returns, masked_whiten

SCALE_REWARDS = ("group", "batch", "none")


def _as_rewards_and_mask(rewards_BG: jax.Array, mask_BG: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  if rewards_BG.ndim != 2:
    raise ValueError(
      f"rewards_BG must be [B, G] (prompts × samples), got shape {rewards_BG.shape}; "
      "reshape a flat [B*G] vector with .reshape(B, G)"
    )
  if mask_BG is None:
    return rewards_BG.astype(jnp.float32), jnp.ones(rewards_BG.shape, bool)
  if mask_BG.shape != rewards_BG.shape:
    raise ValueError(f"mask_BG {mask_BG.shape} must match rewards_BG {rewards_BG.shape}")
  valid_BG = mask_BG > 0
  return jnp.where(valid_BG, rewards_BG.astype(jnp.float32), 0.0), valid_BG


def _group_stats(
  rewards_BG: jax.Array, valid_BG: jax.Array, *, ddof: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per-group (count_B, mean_B, std_B, constant_B) over the valid entries; `rewards_BG` is 0 off them."""
  count_B = jnp.sum(valid_BG.astype(jnp.float32), axis=-1)
  mean_B = jnp.sum(rewards_BG, axis=-1) / jnp.maximum(count_B, 1.0)
  sq_dev_BG = jnp.where(valid_BG, jnp.square(rewards_BG - mean_B[:, None]), 0.0)
  var_B = jnp.sum(sq_dev_BG, axis=-1) / jnp.maximum(count_B - ddof, 1.0)
  high_B = jnp.max(jnp.where(valid_BG, rewards_BG, -jnp.inf), axis=-1)
  low_B = jnp.min(jnp.where(valid_BG, rewards_BG, jnp.inf), axis=-1)
  constant_B = (count_B >= 2) & (high_B == low_B)
  return count_B, mean_B, jnp.sqrt(var_B), constant_B


def _finish(adv_BG: jax.Array, valid_BG: jax.Array, constant_B: jax.Array) -> jax.Array:
  return jnp.where(valid_BG & ~constant_B[:, None], adv_BG, 0.0)


def reinforce_advantages(rewards_BG: jax.Array, mask_BG: jax.Array | None = None) -> jax.Array:
  """REINFORCE with a batch-mean baseline (Williams 1992): Â_i = r_i − mean_batch(r).

  The baseline is the mean over every valid response of the batch, not per group. A batch whose rewards
  are all equal gets exactly 0.

  Args:
    rewards_BG: rewards [B, G].
    mask_BG: optional validity mask [B, G].

  Returns:
    advantages [B, G].
  """
  rewards_BG, valid_BG = _as_rewards_and_mask(rewards_BG, mask_BG)
  flat_valid = valid_BG.reshape(1, -1)
  _, mean, _, constant = _group_stats(rewards_BG.reshape(1, -1), flat_valid, ddof=0)
  adv_BG = rewards_BG - mean[0]
  return jnp.where(valid_BG & ~constant[0], adv_BG, 0.0)


def rloo_advantages(rewards_BG: jax.Array, mask_BG: jax.Array | None = None) -> jax.Array:
  """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740).

    Â_i = r_i − 1/(n−1) Σ_{j≠i} r_j = n/(n−1) · (r_i − mean(r))     (verl `compute_rloo_outcome_advantage`)

  with n the number of valid responses in the group; Σ_i Â_i = 0 per group. A group of one returns its
  raw reward (verl; TRL gives 0). Worked example (reference/formulas.md §8.5): r = [1, 0, 0, 1] →
  [2/3, −2/3, −2/3, 2/3].

  Args:
    rewards_BG: rewards [B, G].
    mask_BG: optional validity mask [B, G].

  Returns:
    advantages [B, G].
  """
  rewards_BG, valid_BG = _as_rewards_and_mask(rewards_BG, mask_BG)
  count_B, mean_B, _, constant_B = _group_stats(rewards_BG, valid_BG, ddof=0)
  scale_B = jnp.where(count_B >= 2, count_B / jnp.maximum(count_B - 1.0, 1.0), 1.0)
  mean_B = jnp.where(count_B >= 2, mean_B, 0.0)
  return _finish(scale_B[:, None] * (rewards_BG - mean_B[:, None]), valid_BG, constant_B)


def grpo_advantages(
  rewards_BG: jax.Array,
  mask_BG: jax.Array | None = None,
  *,
  eps: float = 1e-6,
  unbiased_std: bool = True,
  scale_rewards: str = "group",
) -> jax.Array:
  """GRPO group-normalised advantages (DeepSeekMath, Shao et al. 2024, arXiv 2402.03300).

    Â_i = (r_i − mean(r)) / (std(r) + eps)

  Matches verl `compute_grpo_outcome_advantage` (eps 1e-6, the default) and TRL `GRPOTrainer` (pass
  eps=1e-4). Both use the unbiased std (torch.std, ddof=1): `unbiased_std=False` gives ddof=0.
  `scale_rewards` follows TRL: "group" divides by the group's std, "batch" by the std of all valid
  rewards of the batch (the mean is still the group's), "none" does not divide (Dr.GRPO).
  Zero-variance groups give exactly 0. Worked example (formulas.md §8.1): r = [1, 0, 0, 1] → ±0.866024
  (eps 1e-6), ±0.865875 (eps 1e-4); r = [1, 1, 1, 1] → 0.

  Args:
    rewards_BG: rewards [B, G].
    mask_BG: optional validity mask [B, G].
    eps: added to the std.
    unbiased_std: Bessel-corrected std (torch default, as verl and TRL).
    scale_rewards: "group", "batch" or "none".

  Returns:
    advantages [B, G].
  """
  if scale_rewards not in SCALE_REWARDS:
    raise ValueError(f"unknown scale_rewards {scale_rewards!r}; choose one of {SCALE_REWARDS}")
  ddof = 1 if unbiased_std else 0
  rewards_BG, valid_BG = _as_rewards_and_mask(rewards_BG, mask_BG)
  count_B, mean_B, std_B, constant_B = _group_stats(rewards_BG, valid_BG, ddof=ddof)
  single_B = count_B < 2
  mean_B = jnp.where(single_B, 0.0, mean_B)
  centered_BG = rewards_BG - mean_B[:, None]
  if scale_rewards == "none":
    return _finish(centered_BG, valid_BG, constant_B)
  if scale_rewards == "group":
    std_B = jnp.where(single_B, 1.0, std_B)
  else:
    _, _, batch_std, _ = _group_stats(rewards_BG.reshape(1, -1), valid_BG.reshape(1, -1), ddof=ddof)
    std_B = jnp.broadcast_to(batch_std, mean_B.shape)
  return _finish(centered_BG / (std_B[:, None] + eps), valid_BG, constant_B)


def dr_grpo_advantages(rewards_BG: jax.Array, mask_BG: jax.Array | None = None) -> jax.Array:
  """Dr.GRPO advantages (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783).

    Â_i = r_i − mean(r)          (no std division; = GRPO · (std + eps))

  Pair with the `seq-mean-token-sum-norm` reduction (no 1/|o_i|) for the full Dr.GRPO objective.
  Worked example (formulas.md §8.2): r = [1, 0, 0, 1] → [0.5, −0.5, −0.5, 0.5].

  Args:
    rewards_BG: rewards [B, G].
    mask_BG: optional validity mask [B, G].

  Returns:
    advantages [B, G].
  """
  return grpo_advantages(rewards_BG, mask_BG, scale_rewards="none")


def w_reinforce_advantages(
  rewards_BG: jax.Array,
  mask_BG: jax.Array | None = None,
  *,
  positive_weight: float = 0.1,
  negative_weight: float = 1.0,
) -> jax.Array:
  """PSR / NSR / W-REINFORCE advantages (Zhu et al. 2025, "The Surprising Effectiveness of Negative
  Reinforcement in LLM Reasoning", arXiv 2506.01347; TianHongZXY/RLVR-Decomposed
  `compute_psr_nsr_outcome_advantage`).

    Â_i = λ₊ · r_i − λ₋ · (1 − r_i)        for rewards r ∈ {0, 1}

  λ₊ = `positive_weight` (the paper's λ, recommended 0.1), λ₋ = `negative_weight`. PSR is (1, 0): Â = r;
  NSR is (0, 1): Â = r − 1; W-REINFORCE is (λ, 1): Â = λ if correct else −1. No group baseline.
  Worked example (formulas.md §9): r = [1, 0, 1, 0] → W-REINFORCE [0.1, −1, 0.1, −1].

  Args:
    rewards_BG: rewards in [0, 1], [B, G].
    mask_BG: optional validity mask [B, G].
    positive_weight: λ₊.
    negative_weight: λ₋.

  Returns:
    advantages [B, G].
  """
  rewards_BG, valid_BG = _as_rewards_and_mask(rewards_BG, mask_BG)
  adv_BG = positive_weight * rewards_BG - negative_weight * (1.0 - rewards_BG)
  return jnp.where(valid_BG, adv_BG, 0.0)


def broadcast_to_tokens(values_BG: jax.Array, mask: jax.Array) -> jax.Array:
  """Spreads one value per response over its tokens: out[..., t] = value · mask[..., t].

  Args:
    values_BG: per-response values [B, G] (or [N]).
    mask: token mask [B, G, L], or [N, L] with N = B·G in group-major (row-major) order.

  Returns:
    per-token values with the mask's shape, 0 off the mask.
  """
  valid = mask > 0
  if mask.ndim == values_BG.ndim + 1 and mask.shape[:-1] == values_BG.shape:
    values = values_BG
  elif mask.ndim == 2 and mask.shape[0] == values_BG.size:
    values = values_BG.reshape(-1)
  else:
    raise ValueError(f"mask {mask.shape} must be [B, G, L] or [B*G, L] for values {values_BG.shape}")
  return jnp.where(valid, values.astype(jnp.float32)[..., None], 0.0)


def reinforce_pp_advantages(
  token_rewards_NL: jax.Array, mask_NL: jax.Array, *, gamma: float = 1.0
) -> tuple[jax.Array, jax.Array]:
  """REINFORCE++ (Hu 2025, arXiv 2501.03262): discounted returns whitened over the whole batch.

    G_t = Σ_{s≥t} γ^{s−t} r_s,      Â_t = (G_t − mean_batch G) / sqrt(var_batch G + 1e-8)

  mean and (unbiased) variance over all valid tokens of the batch, as verl's
  `compute_reinforce_plus_plus_outcome_advantage` (`masked_whiten`). The token rewards carry the
  outcome reward on the last token and −β·KL (k1) on every token: build them with
  `outcome_token_rewards`. Masked tokens are skipped (verl resets the return at them instead; the two
  agree on right-padded batches). Worked example (formulas.md §8.6, one token per response, rewards
  [1, 0, 0, 1, 1, 1, 1, 0]) → [0.724569, −1.207615, −1.207615, 0.724569, 0.724569 ×3, −1.207615].

  Args:
    token_rewards_NL: per-token rewards [N, L].
    mask_NL: response-token mask [N, L].
    gamma: discount γ (verl default 1).

  Returns:
    (advantages_NL, returns_NL), 0 off the mask.
  """
  returns_NL = discounted_returns(token_rewards_NL, mask_NL, gamma=gamma)
  return masked_whiten(returns_NL, mask_NL), returns_NL


def reinforce_pp_baseline_advantages(
  rewards_BG: jax.Array, mask: jax.Array, mask_BG: jax.Array | None = None
) -> jax.Array:
  """REINFORCE++-baseline: subtract the group mean, broadcast to tokens, whiten over the batch.

    Â_{i,t} = whiten_batch(r_i − mean_group(r))

  as verl's `compute_reinforce_plus_plus_baseline_outcome_advantage`.

  A group of one keeps its raw reward before whitening (verl). Worked example (formulas.md §8.6, one
  token per response, groups [1, 0, 0, 1] and [1, 1, 1, 0]) → [1, −1, −1, 1, 0.5, 0.5, 0.5, −1.5].

  Args:
    rewards_BG: outcome rewards [B, G] (fold any KL into them beforehand).
    mask: token mask [B, G, L] or [B*G, L].
    mask_BG: optional validity mask [B, G].

  Returns:
    per-token advantages with the shape of `mask`, 0 off it.
  """
  rewards_BG, valid_BG = _as_rewards_and_mask(rewards_BG, mask_BG)
  count_B, mean_B, _, constant_B = _group_stats(rewards_BG, valid_BG, ddof=0)
  centered_BG = _finish(rewards_BG - jnp.where(count_B >= 2, mean_B, 0.0)[:, None], valid_BG, constant_B)
  token_mask = (mask > 0) & (broadcast_to_tokens(valid_BG.astype(jnp.float32), mask) > 0)
  return masked_whiten(broadcast_to_tokens(centered_BG, mask), token_mask)
