"""Weak-to-strong losses (Burns et al. 2023, arXiv 2312.09390; openai/weak-to-strong `loss.py`).

All take the strong student's logits over C classes and the weak supervisor's soft labels (probabilities)
and return `(loss_B, metrics)`, the per-example soft-target cross-entropy CE(logits, target) =
−Σ_c target_c · log softmax(logits)_c against each loss's (stop-gradient) target.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

WARMUPS = ("reference", "linear")


def _soft_xent(logits_BC: jax.Array, target_BC: jax.Array) -> jax.Array:
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  return -jnp.sum(jax.lax.stop_gradient(target_BC) * logp_BC, axis=-1)


def xent_loss(logits_BC: jax.Array, labels_BC: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy with the weak model's soft labels as targets: −Σ_c y_c log p_c.

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C] (rows sum to 1; one-hot for ground truth).

  Returns:
    (loss_B, {}).
  """
  return _soft_xent(logits_BC, labels_BC.astype(jnp.float32)), {}


def product_loss(
  logits_BC: jax.Array, labels_BC: jax.Array, *, alpha: float = 1.0, beta: float = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Product-of-experts target: t ∝ p_student^β · y_weak^α (renormalised, no gradient); CE(logits, t).

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C].
    alpha: exponent of the weak labels.
    beta: exponent of the student's own probabilities.

  Returns:
    (loss_B, {"target_BC": t}).
  """
  labels_BC = labels_BC.astype(jnp.float32)
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  # In log space so that zero labels stay exact zeros (0^α = 0) without log(0) warnings.
  log_t_BC = beta * logp_BC + alpha * jnp.log(jnp.where(labels_BC > 0, labels_BC, 1.0))
  log_t_BC = jnp.where(labels_BC > 0, log_t_BC, -jnp.inf)
  target_BC = jax.nn.softmax(log_t_BC, axis=-1)
  return _soft_xent(logits_BC, target_BC), {"target_BC": target_BC}


def logconf_coef(
  step_frac: jax.Array | float, *, aux_coef: float, warmup_frac: float, warmup: str
) -> jax.Array:
  """Weight of the hardened self-predictions at training progress `step_frac` ∈ [0, 1].

  `warmup="reference"` reproduces openai/weak-to-strong exactly, discontinuity included: the weight
  rises linearly to aux_coef·warmup_frac at step_frac = warmup_frac, then jumps to aux_coef (its issue
  #33). `warmup="linear"` ramps to aux_coef over the warmup (the open fix; EleutherAI/w2s).
  """
  step_frac = jnp.asarray(step_frac, jnp.float32)
  if warmup == "reference":
    return aux_coef * jnp.where(step_frac <= warmup_frac, step_frac, 1.0)
  if warmup == "linear":
    if warmup_frac <= 0:
      return jnp.asarray(aux_coef, jnp.float32)
    return aux_coef * jnp.minimum(1.0, step_frac / warmup_frac)
  raise ValueError(f"unknown warmup {warmup!r}; choose one of {WARMUPS}")


def logconf_loss(
  logits_BC: jax.Array,
  labels_BC: jax.Array,
  *,
  step_frac: jax.Array | float,
  aux_coef: float = 0.5,
  warmup_frac: float = 0.1,
  warmup: str = "reference",
  buffer_K: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Auxiliary confidence loss: soft weak labels mixed with the student's own hardened predictions.

  thr = quantile(p_0, q = mean(y_1)) over the batch (linear interpolation), or over the last K class-0
  probabilities when a rolling buffer is given (EleutherAI/w2s); hard = [p_0 ≥ thr, p_0 < thr];
  target = (1 − coef)·y + coef·hard; loss = CE(logits, target). Binary (C = 2) as in both references.

  Args:
    logits_BC: student logits [B, 2].
    labels_BC: weak soft labels [B, 2].
    step_frac: training progress step / total_steps.
    aux_coef: final weight of the hardened predictions (0.5 in both references).
    warmup_frac: share of training over which the weight warms up.
    warmup: "reference" (openai/weak-to-strong, with its jump) or "linear".
    buffer_K: optional rolling buffer of past class-0 probabilities, oldest first, NaN where empty; the
      threshold is taken over the last K of (buffer, this batch) and that window is returned.

  Returns:
    (loss_B, metrics) with `coef`, `threshold`, `hard_BC` and, with a buffer, the new `buffer_K`.
  """
  if logits_BC.shape[-1] != 2:
    raise ValueError(f"logconf_loss is binary; got {logits_BC.shape[-1]} classes")
  labels_BC = labels_BC.astype(jnp.float32)
  probs_BC = jax.lax.stop_gradient(jax.nn.softmax(logits_BC.astype(jnp.float32), axis=-1))
  prior = jnp.mean(labels_BC[:, 1])
  metrics = {}
  if buffer_K is None:
    threshold = jnp.quantile(probs_BC[:, 0], prior)
  else:
    window_K = jnp.concatenate([buffer_K.astype(jnp.float32), probs_BC[:, 0]])[-buffer_K.shape[0]:]
    threshold = jnp.nanquantile(window_K, prior)
    metrics["buffer_K"] = window_K
  is_zero_B = probs_BC[:, 0] >= threshold
  hard_BC = jnp.stack([is_zero_B, ~is_zero_B], axis=-1).astype(jnp.float32)
  coef = logconf_coef(step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac, warmup=warmup)
  target_BC = labels_BC * (1.0 - coef) + hard_BC * coef
  metrics.update(coef=coef, threshold=threshold, hard_BC=hard_BC)
  return _soft_xent(logits_BC, target_BC), metrics


W2S_LOSSES = {"xent": xent_loss, "logconf": logconf_loss, "product": product_loss}
