"""Supervised fine-tuning: masked next-token cross-entropy with optional z-loss and label smoothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sft_loss(
  logits_BLV: jax.Array,
  targets_BL: jax.Array,
  mask_BL: jax.Array,
  *,
  z_loss: float = 0.0,
  label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token cross-entropy of the targets under the logits.

  loss_t = −[(1−ε)·log p(y_t) + (ε/V)·Σ_v log p(v)] + z·(log Z_t)²   (z-loss: PaLM, arXiv 2204.02311)

  Args:
    logits_BLV: next-token logits [B, L, V] (position t predicts targets_BL[:, t]).
    targets_BL: int target ids [B, L].
    mask_BL: 1 on tokens that are trained on (responses), 0 on prompts and padding [B, L].
    z_loss: coefficient of the squared log-partition penalty.
    label_smoothing: ε, mass spread uniformly over the vocabulary.

  Returns:
    (loss_BL masked to 0 off the mask, metrics) where metrics has per-token `nll_BL`, `correct_BL`.
  """
  logits_BLV = logits_BLV.astype(jnp.float32)
  log_z_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  nll_BL = log_z_BL - target_logit_BL
  loss_BL = nll_BL
  if label_smoothing:
    mean_logp_BL = jnp.mean(logits_BLV, axis=-1) - log_z_BL
    loss_BL = (1.0 - label_smoothing) * nll_BL - label_smoothing * mean_logp_BL
  if z_loss:
    loss_BL = loss_BL + z_loss * jnp.square(log_z_BL)
  mask_BL = mask_BL.astype(jnp.float32)
  correct_BL = (jnp.argmax(logits_BLV, axis=-1) == targets_BL).astype(jnp.float32)
  return loss_BL * mask_BL, {"nll_BL": nll_BL * mask_BL, "correct_BL": correct_BL * mask_BL}
