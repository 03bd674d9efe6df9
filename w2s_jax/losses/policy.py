"""Policy-gradient losses, KL penalties, DAPO and unlikeliness reward shaping.

Shape legend: `B` responses in the batch (B·G when they come in groups), `L` response tokens, `G` samples
per prompt. Every loss returns the **per-token** loss `loss_BL` (0 off the mask) and a metrics dict of
scalars; the reduction (`token-mean`, `seq-mean-token-mean`, …) is `w2s_jax.losses.aggregation`'s job.
Log-probs are of the sampled tokens: `logp_BL` under the policy being trained, `old_logp_BL` under the
policy that sampled (π_old, no gradient), `ref_logp_BL` under the frozen reference. Masked positions
may hold garbage (even ±inf): they are replaced before any arithmetic, so neither the loss nor its
gradient sees them, and a fully masked row gives 0.

ρ_t = π_θ/π_old = exp(logp − old_logp), with the log-ratio clamped to [−20, 20] (verl) before exp.

One pure function per kind (the rlax way, in `policy_kinds.py`), all of one signature
`fn(terms, options) -> PolicyTokenLoss`:
`ppo_clip_loss` (`ppo`, `dapo`, `clip_higher`), `gspo_loss`, `cispo_loss`, `topr_loss`, `reinforce_loss`.
`POLICY_LOSSES` maps each config name (`loss.name`) to a `PolicyLoss` entry, the kind's function and its
defaults; calling an entry (or `policy_loss(kind=...)`) masks the inputs, runs the function, applies the
positive/negative weights and computes the metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from w2s_jax.losses.aggregation import safe_ratio
from w2s_jax.losses.policy_kinds import (
  PolicyOptions,
  PolicyTerms,
  PolicyTokenLoss,
  cispo_loss,
  gspo_loss,
  ppo_clip_loss,
  reinforce_loss,
  topr_loss,
)

TOPR_LEVELS = ("sequence", "token")


def _where_valid(valid_BL: jax.Array, x_BL: jax.Array) -> jax.Array:
  return jnp.where(valid_BL, x_BL.astype(jnp.float32), 0.0)


def _check_shapes(**arrays: jax.Array) -> None:
  shapes = {name: tuple(a.shape) for name, a in arrays.items()}
  if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
    raise ValueError(f"expected [B, L] arrays of one shape, got {shapes}")


def _masked_mean(x_BL: jax.Array, valid_BL: jax.Array) -> jax.Array:
  return safe_ratio(jnp.sum(jnp.where(valid_BL, x_BL, 0.0)), jnp.sum(valid_BL.astype(jnp.float32)))


@dataclasses.dataclass(frozen=True)
class PolicyLoss:
  """A `POLICY_LOSSES` entry: a kind's pure function and its defaults; call it like `policy_loss`.

  Attributes:
    name: the config name (`loss.name`).
    fn: the kind's pure per-token function, `fn(terms, options) -> PolicyTokenLoss`.
    clip_eps: default (ε_l, ε_h) when `clip_eps` / `clip_eps_high` are not given.
    symmetric_eps: a given `clip_eps` sets ε_h too (PPO's single ε).
    dual_clip: the kind takes `dual_clip_c`.
  """

  name: str
  fn: Callable[[PolicyTerms, PolicyOptions], PolicyTokenLoss]
  clip_eps: tuple[float, float] = (0.0, 0.0)
  symmetric_eps: bool = False
  dual_clip: bool = False

  def __call__(
    self,
    logp_BL: jax.Array,
    old_logp_BL: jax.Array,
    advantages_BL: jax.Array,
    mask_BL: jax.Array,
    *,
    clip_eps: float | None = None,
    clip_eps_high: float | None = None,
    dual_clip_c: float | None = None,
    positive_B: jax.Array | None = None,
    topr_level: str = "sequence",
    use_is_ratio: bool = False,
    positive_weight: float = 1.0,
    negative_weight: float = 1.0,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """This kind's per-token loss [B, L] and metrics; arguments and results as `policy_loss`."""
    _check_shapes(logp_BL=logp_BL, old_logp_BL=old_logp_BL, advantages_BL=advantages_BL, mask_BL=mask_BL)
    if topr_level not in TOPR_LEVELS:
      raise ValueError(f"unknown topr_level {topr_level!r}; choose one of {TOPR_LEVELS}")
    if dual_clip_c is not None and (not self.dual_clip or dual_clip_c <= 1.0):
      raise ValueError(
        f"dual_clip_c must be > 1 and only goes with ppo/dapo kinds (got {dual_clip_c}, {self.name})")
    if positive_B is not None and positive_B.shape != logp_BL.shape[:1]:
      raise ValueError(f"positive_B {positive_B.shape} must be [B] = {logp_BL.shape[:1]}")
    eps_low, eps_high = self.clip_eps
    if clip_eps is not None:
      eps_low = clip_eps
      eps_high = clip_eps if self.symmetric_eps else eps_high
    if clip_eps_high is not None:
      eps_high = clip_eps_high
    terms = _terms(logp_BL, old_logp_BL, advantages_BL, mask_BL, positive_B)
    out = self.fn(terms, PolicyOptions(eps_low, eps_high, dual_clip_c, topr_level, use_is_ratio))
    loss_BL = out.loss_BL
    if positive_weight != 1.0 or negative_weight != 1.0:
      loss_BL = loss_BL * jnp.where(terms.positive_BL, positive_weight, negative_weight)
    return jnp.where(terms.valid_BL, loss_BL, 0.0), _metrics(terms, out)


def _terms(
  logp_BL: jax.Array, old_logp_BL: jax.Array, advantages_BL: jax.Array, mask_BL: jax.Array,
  positive_B: jax.Array | None,
) -> PolicyTerms:
  """Masks the inputs (garbage off the mask never reaches arithmetic) and forms ρ [B, L]."""
  valid_BL = mask_BL > 0
  logp_BL = _where_valid(valid_BL, logp_BL)
  old_logp_BL = jax.lax.stop_gradient(_where_valid(valid_BL, old_logp_BL))
  adv_BL = jax.lax.stop_gradient(_where_valid(valid_BL, advantages_BL))
  log_ratio_BL = jnp.clip(logp_BL - old_logp_BL, -20.0, 20.0)
  if positive_B is None:
    positive_BL = adv_BL > 0
  else:
    positive_BL = jnp.broadcast_to(positive_B.astype(bool)[:, None], adv_BL.shape)
  return PolicyTerms(logp_BL, log_ratio_BL, jnp.exp(log_ratio_BL), adv_BL, valid_BL, positive_BL)


def _metrics(t: PolicyTerms, out: PolicyTokenLoss) -> dict[str, jax.Array]:
  """Scalar diagnostics over the valid tokens (see `policy_loss`'s Returns)."""
  valid_BL = t.valid_BL
  stat_ratio_BL = jax.lax.stop_gradient(out.ratio_BL)
  any_valid = jnp.any(valid_BL)
  return {
    "ratio_mean": _masked_mean(stat_ratio_BL, valid_BL),
    "ratio_min": jnp.where(any_valid, jnp.min(jnp.where(valid_BL, stat_ratio_BL, jnp.inf)), 0.0),
    "ratio_max": jnp.where(any_valid, jnp.max(jnp.where(valid_BL, stat_ratio_BL, -jnp.inf)), 0.0),
    "clipfrac": _masked_mean(out.clipped_BL.astype(jnp.float32), valid_BL),
    "dual_clipfrac": _masked_mean(out.dual_BL.astype(jnp.float32), valid_BL),
    "ppo_kl": jax.lax.stop_gradient(_masked_mean(-t.log_ratio_BL, valid_BL)),
    "approx_kl": jax.lax.stop_gradient(_masked_mean(jnp.expm1(t.log_ratio_BL) - t.log_ratio_BL, valid_BL)),
  }


POLICY_LOSSES: dict[str, PolicyLoss] = {
  # Schulman et al. 2017; TRL/verl defaults
  "ppo": PolicyLoss("ppo", ppo_clip_loss, (0.2, 0.2), symmetric_eps=True, dual_clip=True),
  # DAPO clip-higher
  "dapo": PolicyLoss("dapo", ppo_clip_loss, (0.2, 0.28), dual_clip=True),
  "clip_higher": PolicyLoss("clip_higher", ppo_clip_loss, (0.2, 0.28), dual_clip=True),
  # GSPO paper
  "gspo": PolicyLoss("gspo", gspo_loss, (3e-4, 4e-4)),
  # no lower bound (paper); weight cap 1 + 4 = 5 (TRL epsilon_high=5.0, ScaleRL)
  "cispo": PolicyLoss("cispo", cispo_loss, (1.0, 4.0)),
  "topr": PolicyLoss("topr", topr_loss),
  "reinforce": PolicyLoss("reinforce", reinforce_loss),
}


def policy_loss(
  logp_BL: jax.Array,
  old_logp_BL: jax.Array,
  advantages_BL: jax.Array,
  mask_BL: jax.Array,
  *,
  kind: str,
  clip_eps: float | None = None,
  clip_eps_high: float | None = None,
  dual_clip_c: float | None = None,
  positive_B: jax.Array | None = None,
  topr_level: str = "sequence",
  use_is_ratio: bool = False,
  positive_weight: float = 1.0,
  negative_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token policy-gradient loss of the named kind (the negative of each paper's objective).

  Dispatches through `POLICY_LOSSES`; the formula and paper of each kind are in its function's docstring:
  `ppo` (`ppo_clip_loss`, ε = 0.2 on both sides, optional dual clip), `dapo` / `clip_higher`
  (`ppo_clip_loss` with ε = (0.2, 0.28)), `gspo` (`gspo_loss`), `cispo` (`cispo_loss`), `topr`
  (`topr_loss`), `reinforce` (`reinforce_loss`).

  Positive samples are `positive_B` where given, else the tokens with A > 0 (A ≥ 0 is the same for the
  loss: those terms vanish). NSR / PSR / W-REINFORCE (Zhu et al. 2025, arXiv 2506.01347) multiply the loss
  of positive samples by `positive_weight` (λ, 0.1 recommended for W-REINFORCE; 0 gives NSR) and of the
  others by `negative_weight` (0 gives PSR); this works with every kind.

  Args:
    logp_BL: log π_θ of the sampled tokens [B, L] (carries the gradient).
    old_logp_BL: log π_old of the same tokens [B, L] (no gradient is taken through it).
    advantages_BL: per-token advantages [B, L] (no gradient is taken through them).
    mask_BL: 1 on response tokens that are trained on [B, L].
    kind: one of `POLICY_LOSSES`.
    clip_eps: ε_l; None for the kind's default (`POLICY_LOSSES[kind].clip_eps`).
    clip_eps_high: ε_h; None for the kind's default (which is ε_l for `ppo` when ε_l is given).
    dual_clip_c: c > 1 for PPO dual clipping, or None.
    positive_B: bool per response [B], which samples count as positive (TOPR, weights); optional.
    topr_level: "sequence" (paper) or "token" (Trinity-RFT) importance ratio for `topr`.
    use_is_ratio: `reinforce` only: weight by sg(ρ).
    positive_weight: λ₊, factor on positive samples' loss.
    negative_weight: λ₋, factor on the other samples' loss.

  Returns:
    (loss_BL, metrics): loss 0 off the mask; metrics are scalars over valid tokens: `ratio_mean`,
    `ratio_min`, `ratio_max` (of ρ, or of s for gspo), `clipfrac` (share of tokens whose
    loss the clip changed; for topr, negatives with w < 1; for cispo, tokens whose weight was clipped),
    `dual_clipfrac`, `ppo_kl` = mean(log π_old − log π_θ) (verl), `approx_kl` = mean((ρ−1) − log ρ) (k3).
  """
  if kind not in POLICY_LOSSES:
    raise ValueError(f"unknown policy loss kind {kind!r}; choose one of {sorted(POLICY_LOSSES)}")
  return POLICY_LOSSES[kind](
    logp_BL, old_logp_BL, advantages_BL, mask_BL, clip_eps=clip_eps, clip_eps_high=clip_eps_high,
    dual_clip_c=dual_clip_c, positive_B=positive_B, topr_level=topr_level, use_is_ratio=use_is_ratio,
    positive_weight=positive_weight, negative_weight=negative_weight)

KL_KINDS = ("k1", "k2", "k3")
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}  # verl's `kl_penalty` / `kl_loss_type` names


def kl_penalty(
  logp_BL: jax.Array,
  ref_logp_BL: jax.Array,
  kind: str = "k3",
  *,
  mask_BL: jax.Array | None = None,
  clamp: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token estimators of KL(π_θ ‖ π_ref) on samples from π_θ (Schulman, "Approximating KL
  divergence", http://joschu.net/blog/kl-approx.html).

  With log r = log π_ref − log π_θ:
    k1 = −log r                  (unbiased, can be negative; verl "kl", in-reward KL of PPO/RLOO/REINFORCE++)
    k2 = ½ (log r)²              (biased; its gradient is the true KL gradient; verl "mse")
    k3 = (r − 1) − log r ≥ 0     (unbiased, low variance; GRPO's loss KL, verl "low_var_kl")
  Example (formulas.md §8.9): log π_θ = −1, log π_ref = −1.5 → k1 0.5, k2 0.125, k3 0.106531.

  Args:
    logp_BL: log π_θ of the sampled tokens [B, L].
    ref_logp_BL: log π_ref of the same tokens [B, L].
    kind: "k1", "k2", "k3" (or verl's "kl", "mse", "low_var_kl").
    mask_BL: optional token mask [B, L]; values off it are 0 and never computed from.
    clamp: verl's clamps for k3: log r to [−20, 20], then k3 to ≤ 10.

  Returns:
    (kl_BL, {"kl": mean over the valid tokens}).
  """
  kind = _KL_ALIASES.get(kind, kind)
  if kind not in KL_KINDS:
    raise ValueError(f"unknown kl kind {kind!r}; choose one of {KL_KINDS} or {sorted(_KL_ALIASES)}")
  _check_shapes(logp_BL=logp_BL, ref_logp_BL=ref_logp_BL)
  valid_BL = jnp.ones(logp_BL.shape, bool) if mask_BL is None else mask_BL > 0
  log_r_BL = _where_valid(valid_BL, ref_logp_BL) - _where_valid(valid_BL, logp_BL)
  if kind == "k1":
    kl_BL = -log_r_BL
  elif kind == "k2":
    kl_BL = 0.5 * jnp.square(log_r_BL)
  else:
    if clamp:
      log_r_BL = jnp.clip(log_r_BL, -20.0, 20.0)
    kl_BL = jnp.maximum(jnp.expm1(log_r_BL) - log_r_BL, 0.0)  # exact ≥ 0 despite rounding
    if clamp:
      kl_BL = jnp.minimum(kl_BL, 10.0)
  kl_BL = jnp.where(valid_BL, kl_BL, 0.0)
  return kl_BL, {"kl": jax.lax.stop_gradient(_masked_mean(kl_BL, valid_BL))}


def overlong_penalty(
  lengths_B: jax.Array, max_len: int, buffer_len: int, penalty: float = 1.0
) -> jax.Array:
  """DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13; verl `DAPORewardManager`).

    R_len(y) = 0                               if |y| ≤ L_max − L_cache
             = ((L_max − L_cache) − |y|) / L_cache · penalty    if L_max − L_cache < |y| ≤ L_max
             = −penalty                        if |y| > L_max

  added to the task reward. verl computes min(−(|y| − (L_max − L_cache))/L_cache · penalty, 0), which is
  the same for |y| ≤ L_max. Example (formulas.md §8.3, L_max = 20480, L_cache = 4096): 16000 → 0,
  18000 → −0.394531, 20480 → −1.

  Args:
    lengths_B: response lengths in tokens [B].
    max_len: L_max.
    buffer_len: L_cache > 0.
    penalty: the penalty factor (verl `penalty_factor`, 1.0).

  Returns:
    rewards to add [B], float32, in [−penalty, 0].
  """
  if buffer_len <= 0:
    raise ValueError(f"buffer_len must be positive, got {buffer_len}")
  excess_B = lengths_B.astype(jnp.float32) - (max_len - buffer_len)
  return jnp.clip(-excess_B / buffer_len * penalty, -penalty, 0.0)


def dynamic_sampling_mask(rewards_BG: jax.Array, mask_BG: jax.Array | None = None) -> jax.Array:
  """DAPO dynamic sampling: which groups to keep, those whose rewards are not all equal.

    keep_b = 0 < |{i : r_{b,i} = max}| < G, i.e. std(r_b) > 0          (verl `algorithm.filter_groups`)

  All-correct and all-wrong groups carry no GRPO signal and are dropped (the caller refills the batch).
  Like verl, a group with a single valid sample is kept; one with none is dropped.

  Args:
    rewards_BG: rewards (or the filter metric, e.g. accuracy) [B, G].
    mask_BG: optional validity mask [B, G].

  Returns:
    keep_B, bool [B].
  """
  if rewards_BG.ndim != 2:
    raise ValueError(f"rewards_BG must be [B, G], got {rewards_BG.shape}")
  valid_BG = jnp.ones(rewards_BG.shape, bool) if mask_BG is None else mask_BG > 0
  rewards_BG = rewards_BG.astype(jnp.float32)
  count_B = jnp.sum(valid_BG, axis=-1)
  high_B = jnp.max(jnp.where(valid_BG, rewards_BG, -jnp.inf), axis=-1)
  low_B = jnp.min(jnp.where(valid_BG, rewards_BG, jnp.inf), axis=-1)
  return (count_B == 1) | ((count_B >= 2) & (high_B > low_B))


def unlikeliness_rewards(
  rewards_BG: jax.Array,
  seq_logp_BG: jax.Array,
  *,
  rank_penalty: float = 0.25,
  mask_BG: jax.Array | None = None,
) -> jax.Array:
  """The unlikeliness reward (He, Fried, Welleck 2025, "Rewarding the Unlikely", arXiv 2506.02355).

    rank_i = position of ℓ_i among the group in ascending order (0 = least likely),  ρ_i = rank_i / G
    r̃_i = r_i · (1 − β_rank · ρ_i)

  ℓ_i is the masked *mean* token log-prob of sample i under π_old (e.g. `masked_mean(old_logp_NL, mask_NL,
  axis=-1).reshape(B, G)`); ties keep index order (stable sort). Only samples with r > 0 change; the most
  likely correct one gets 1 − β(G−1)/G. Feed r̃ to `grpo_advantages` (the authors' code, eps 1e-6).
  Example (formulas.md §9): r = [1, 1, 0, 1], ℓ = [−0.2, −0.9, −0.5, −0.4], β = 0.25 →
  r̃ = [0.8125, 1, 0, 0.875] → GRPO Â = [0.309304, 0.721709, −1.477785, 0.446772].

  Args:
    rewards_BG: rewards [B, G].
    seq_logp_BG: mean token log-prob of each sample under the sampling policy [B, G].
    rank_penalty: β_rank (the paper's script: 0.25; the code default 0).
    mask_BG: optional validity mask [B, G]: invalid samples are not ranked and G counts valid ones.

  Returns:
    shaped rewards [B, G] (invalid samples keep their reward).
  """
  if rewards_BG.ndim != 2 or seq_logp_BG.shape != rewards_BG.shape:
    raise ValueError(f"rewards_BG {rewards_BG.shape} and seq_logp_BG {seq_logp_BG.shape} must be one [B, G]")
  valid_BG = jnp.ones(rewards_BG.shape, bool) if mask_BG is None else mask_BG > 0
  keys_BG = jnp.where(valid_BG, seq_logp_BG.astype(jnp.float32), jnp.inf)
  order_BG = jnp.argsort(keys_BG, axis=-1, stable=True)
  rank_BG = jnp.argsort(order_BG, axis=-1, stable=True).astype(jnp.float32)
  count_B = jnp.maximum(jnp.sum(valid_BG.astype(jnp.float32), axis=-1), 1.0)
  factor_BG = 1.0 - rank_penalty * rank_BG / count_B[:, None]
  rewards_BG = rewards_BG.astype(jnp.float32)
  return jnp.where(valid_BG, rewards_BG * factor_BG, rewards_BG)
