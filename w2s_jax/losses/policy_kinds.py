"""The policy-gradient loss kinds, one pure function each (the rlax way), of one signature:

  fn(terms: PolicyTerms, options: PolicyOptions) -> PolicyTokenLoss

`terms` are the masked [B, L] inputs (`B` responses, `L` response tokens), ρ_t = π_θ/π_old already formed;
the caller (`w2s_jax.losses.policy.PolicyLoss`) masks, weights positives/negatives and computes metrics.
`w2s_jax.losses.policy.POLICY_LOSSES` maps each config name to one of these functions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PolicyTerms(NamedTuple):
  """The masked inputs every kind sees (all [B, L] float32, 0 off the mask; bools for the masks).

  Attributes:
    logp_BL: log π_θ (carries the gradient).
    log_ratio_BL: log ρ = log π_θ − sg(log π_old), clamped to [−20, 20].
    ratio_BL: ρ = exp(log_ratio_BL).
    adv_BL: sg(A).
    valid_BL: the trained tokens.
    positive_BL: tokens of positive samples (`positive_B`, else A > 0).
  """

  logp_BL: jax.Array
  log_ratio_BL: jax.Array
  ratio_BL: jax.Array
  adv_BL: jax.Array
  valid_BL: jax.Array
  positive_BL: jax.Array


class PolicyOptions(NamedTuple):
  """Static settings of a kind (each kind reads the ones it documents).

  Attributes:
    eps_low: ε_l, lower clip range (ρ ≥ 1 − ε_l).
    eps_high: ε_h, upper clip range (ρ ≤ 1 + ε_h).
    dual_clip_c: c > 1 for PPO dual clipping, or None.
    topr_level: "sequence" or "token" importance ratio for `topr`.
    use_is_ratio: `reinforce` weights by sg(ρ).
  """

  eps_low: float = 0.0
  eps_high: float = 0.0
  dual_clip_c: float | None = None
  topr_level: str = "sequence"
  use_is_ratio: bool = False


class PolicyTokenLoss(NamedTuple):
  """What a kind returns (all [B, L]; values off the mask are ignored by the caller).

  Attributes:
    loss_BL: the per-token loss before the positive/negative weights.
    ratio_BL: the ratio the metrics report (ρ, or the sequence ratio s for gspo).
    clipped_BL: tokens whose loss the clip changed.
    dual_BL: tokens where the dual clip bound.
  """

  loss_BL: jax.Array
  ratio_BL: jax.Array
  clipped_BL: jax.Array
  dual_BL: jax.Array


def _clipped_surrogate(
  adv_BL: jax.Array, ratio_BL: jax.Array, eps_low: float, eps_high: float
) -> tuple[jax.Array, jax.Array]:
  """max(−A·r, −A·clip(r, 1−ε_l, 1+ε_h)) [B, L] and where the clipped term won [B, L]."""
  loss1_BL = -adv_BL * ratio_BL
  loss2_BL = -adv_BL * jnp.clip(ratio_BL, 1.0 - eps_low, 1.0 + eps_high)
  return jnp.maximum(loss1_BL, loss2_BL), loss2_BL > loss1_BL


def _weighted_logp_loss(t: PolicyTerms, weight_BL: jax.Array, clipped_BL: jax.Array) -> PolicyTokenLoss:
  """ℓ = −sg(w)·A·log π_θ, the form of cispo, topr and reinforce."""
  loss_BL = -jax.lax.stop_gradient(weight_BL) * t.adv_BL * t.logp_BL
  return PolicyTokenLoss(loss_BL, t.ratio_BL, clipped_BL, jnp.zeros(t.adv_BL.shape, bool))


def ppo_clip_loss(t: PolicyTerms, o: PolicyOptions) -> PolicyTokenLoss:
  """PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347), per token:

    ℓ = max(−A·ρ, −A·clip(ρ, 1−ε_l, 1+ε_h))

  With `dual_clip_c` = c > 1 (Ye et al. 2020, arXiv 1912.09729; verl `clip_ratio_c`), where A < 0:
  ℓ = min(ℓ, −A·c). `dapo` / `clip_higher` (Yu et al. 2025, arXiv 2503.14476) are this function with the
  asymmetric ε_l = 0.2, ε_h = 0.28. Examples (formulas.md §8.3): A=+1, ρ=1.5 → −1.28; A=−1, ρ=0.5 → 0.8;
  A=−1, ρ=1.5 → 1.5; dual clip c=3, A=−1, ρ=5 → 3.

  Args:
    t: the masked inputs, [B, L] each.
    o: reads `eps_low`, `eps_high`, `dual_clip_c`.

  Returns:
    PolicyTokenLoss with arrays [B, L]; the reported ratio is ρ.
  """
  loss_BL, clipped_BL = _clipped_surrogate(t.adv_BL, t.ratio_BL, o.eps_low, o.eps_high)
  dual_BL = jnp.zeros(t.adv_BL.shape, bool)
  if o.dual_clip_c is not None:
    loss3_BL = -t.adv_BL * o.dual_clip_c
    dual_BL = (t.adv_BL < 0) & (loss3_BL < loss_BL)
    loss_BL = jnp.where(t.adv_BL < 0, jnp.minimum(loss_BL, loss3_BL), loss_BL)
  return PolicyTokenLoss(loss_BL, t.ratio_BL, clipped_BL, dual_BL)


def gspo_loss(t: PolicyTerms, o: PolicyOptions) -> PolicyTokenLoss:
  """GSPO (Zheng et al. 2025, arXiv 2507.18071), the GSPO-token form:

    s = exp((1/|y|) Σ_t log ρ_t)    (log s clamped ≤ 10, as verl)
    s_t = sg(s)·π_θ(y_t)/sg(π_θ(y_t))    (value s, gradient s·∇log π_θ(y_t))
    ℓ = max(−A·s_t, −A·clip(s_t, 1−ε_l, 1+ε_h))

  ε = (3e-4, 4e-4) by default. Pair with `seq-mean-token-mean` for the paper's objective.

  Args:
    t: the masked inputs, [B, L] each.
    o: reads `eps_low`, `eps_high`.

  Returns:
    PolicyTokenLoss with arrays [B, L]; the reported ratio is s_t.
  """
  tokens_B = jnp.sum(t.valid_BL.astype(jnp.float32), axis=-1)
  seq_log_B = jnp.minimum(jnp.sum(t.log_ratio_BL, axis=-1) / jnp.maximum(tokens_B, 1.0), 10.0)
  seq_log_BL = jax.lax.stop_gradient(seq_log_B)[:, None] + t.logp_BL - jax.lax.stop_gradient(t.logp_BL)
  seq_ratio_BL = jnp.exp(seq_log_BL)
  loss_BL, clipped_BL = _clipped_surrogate(t.adv_BL, seq_ratio_BL, o.eps_low, o.eps_high)
  return PolicyTokenLoss(loss_BL, seq_ratio_BL, clipped_BL, jnp.zeros(t.adv_BL.shape, bool))


def cispo_loss(t: PolicyTerms, o: PolicyOptions) -> PolicyTokenLoss:
  """CISPO (MiniMax-M1, arXiv 2506.13585): a clipped, stop-gradient importance weight on REINFORCE.

    ℓ = −sg(clip(ρ, 1−ε_l, 1+ε_h))·A·log π_θ

  Defaults ε_l = 1 (no lower bound), ε_h = 4 (weight ≤ 5, TRL's `epsilon_high=5.0`, ScaleRL); verl's form
  is ε = (0.2, 0.28).

  Args:
    t: the masked inputs, [B, L] each.
    o: reads `eps_low`, `eps_high`.

  Returns:
    PolicyTokenLoss with arrays [B, L]; `clipped_BL` marks tokens whose weight was clipped.
  """
  weight_BL = jnp.clip(t.ratio_BL, 1.0 - o.eps_low, 1.0 + o.eps_high)
  return _weighted_logp_loss(t, weight_BL, weight_BL != t.ratio_BL)


def topr_loss(t: PolicyTerms, o: PolicyOptions) -> PolicyTokenLoss:
  """TOPR, tapered off-policy REINFORCE (Le Roux et al. 2025, arXiv 2503.14286):

    ℓ = −sg(w)·A·log π_θ,  w = 1 for positive samples, w = clip(π_θ(y)/π_old(y), 0, 1) for negative ones

  with the sequence ratio the product of token ratios; `topr_level="token"` uses the token ratio instead
  (Trinity-RFT). Pair with `seq-mean-token-sum` for the paper's per-sample loss −w·R·log π(y|x).

  Args:
    t: the masked inputs, [B, L] each.
    o: reads `topr_level`.

  Returns:
    PolicyTokenLoss with arrays [B, L]; `clipped_BL` marks negatives with w < 1.
  """
  if o.topr_level == "sequence":
    seq_log_B = jnp.sum(t.log_ratio_BL, axis=-1)
    neg_weight_BL = jnp.broadcast_to(jnp.exp(jnp.minimum(seq_log_B, 0.0))[:, None], t.adv_BL.shape)
  else:
    neg_weight_BL = jnp.minimum(t.ratio_BL, 1.0)
  weight_BL = jnp.where(t.positive_BL, 1.0, neg_weight_BL)
  return _weighted_logp_loss(t, weight_BL, weight_BL < 1.0)


def reinforce_loss(t: PolicyTerms, o: PolicyOptions) -> PolicyTokenLoss:
  """REINFORCE (Williams 1992): ℓ = −A·log π_θ; with `use_is_ratio`, ℓ = −sg(ρ)·A·log π_θ (off-policy
  importance weighting, unclipped).

  Args:
    t: the masked inputs, [B, L] each.
    o: reads `use_is_ratio`.

  Returns:
    PolicyTokenLoss with arrays [B, L]; nothing is clipped.
  """
  weight_BL = t.ratio_BL if o.use_is_ratio else jnp.ones_like(t.ratio_BL)
  return _weighted_logp_loss(t, weight_BL, jnp.zeros(t.adv_BL.shape, bool))
