"""Process reward model (PRM) loss: binary cross-entropy on step-end tokens.

A PRM scores each reasoning step: the value head's logit at the last token of step i estimates the
probability that the solution prefix up to step i can still reach the right answer. Targets are
Math-Shepherd's hard or soft Monte Carlo labels (`advantages.math_shepherd_labels`) or human labels
(PRM800K), written at the step-end positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def prm_loss(
  logits_BL: jax.Array, labels_BL: jax.Array, step_end_mask_BL: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token binary cross-entropy with logits at step ends (Math-Shepherd, arXiv 2312.08935 §3.3).

  loss_t = −[y_t·log σ(z_t) + (1 − y_t)·log(1 − σ(z_t))]   at tokens with step_end_mask = 1, 0 elsewhere.
  Soft labels y ∈ [0, 1] give the soft-estimation variant; computed stably as softplus(z) − y·z.

  Args:
    logits_BL: value-head logits [B, L].
    labels_BL: targets in [0, 1] at step ends [B, L] (ignored elsewhere).
    step_end_mask_BL: 1 at the last token of each labelled step [B, L].

  Returns:
    (loss_BL, metrics) with `correct_BL` (1 where the thresholded prediction matches y > ½).
  """
  z = logits_BL.astype(jnp.float32)
  y = labels_BL.astype(jnp.float32)
  m = step_end_mask_BL.astype(jnp.float32)
  loss = (jax.nn.softplus(z) - y * z) * m
  correct = ((z > 0) == (y > 0.5)).astype(jnp.float32) * m
  return loss, {"correct_BL": correct}
