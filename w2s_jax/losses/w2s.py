"""Weak-to-strong losses (Burns et al. 2023, arXiv 2312.09390; openai/weak-to-strong `loss.py`;
EleutherAI/w2s `w2s/loss.py`).

All take the strong student's logits over C classes and the weak supervisor's soft labels (probabilities)
and return `(loss_B, metrics)`. Most are the per-example soft-target cross-entropy CE(logits, target) =
−Σ_c target_c · log softmax(logits)_c against each loss's (stop-gradient) target; `window_loss` masks it,
`kl_loss` subtracts the label entropy, `confidence_penalty_loss` subtracts the student's entropy. The
batch loss of the references is the mean of `loss_B`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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


def _entropy(logp_BC: jax.Array) -> jax.Array:
  """H(p) = −Σ_c p_c log p_c, from log-probabilities (exact 0 where p_c underflows to 0)."""
  return -jnp.sum(jnp.exp(logp_BC) * logp_BC, axis=-1)


def entropy_loss(
  logits_BC: jax.Array,
  labels_BC: jax.Array,
  *,
  step_frac: jax.Array | float,
  aux_coef: float = 0.5,
  warmup_frac: float = 0.1,
  warmup: str = "linear",
  balance_batch: bool = False,
  stop_gradient: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """EleutherAI/w2s's "entropy" loss: the weak labels mixed with the student's own *soft* predictions.

  It is their `log_confidence_loss(harden=False)` (`w2s/loss.py`, selected by `--loss entropy`):
  coef = `logconf_coef(step_frac, ...)`; target = (1 − coef)·y + coef·sg(p); loss = CE(logits, target)
  = (1 − coef)·CE(y, p) + coef·H(p). Because p is detached in the reference, the entropy term adds to the
  value but not to the gradient: ∂loss/∂logits = p − target = (1 − coef)·(p − y), the xent gradient
  scaled by (1 − coef). `stop_gradient=False` differentiates H(p) too: entropy minimisation (Grandvalet
  & Bengio 2004), the soft analogue of logconf's hardened self-targets.

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C].
    step_frac: training progress step / total_steps.
    aux_coef: final weight of the student's predictions (`logconf_weight`, 0.5 in the reference).
    warmup_frac: share of training over which the weight warms up (reference: `logconf_warmup_steps`).
    warmup: "linear" (the reference's min(1, step / warmup_steps)) or "reference" (openai's jump).
    balance_batch: binary only; labels ← σ(logit(y₁) − mean_B logit(y₁)) with logit(y) =
      log(y + 1e-7) − log(1 − y + 1e-7), as the reference's `balance_batch`.
    stop_gradient: detach the student's predictions in the target (True = reference).

  Returns:
    (loss_B, {"coef", "entropy_B": H(p)}).
  """
  labels_BC = labels_BC.astype(jnp.float32)
  if balance_batch:
    if labels_BC.shape[-1] != 2:
      raise ValueError(f"balance_batch is binary; got {labels_BC.shape[-1]} classes")
    y1_B = labels_BC[:, 1]
    logodds_B = jnp.log(y1_B + 1e-7) - jnp.log(1.0 - y1_B + 1e-7)
    y1_B = jax.nn.sigmoid(logodds_B - jnp.mean(logodds_B))
    labels_BC = jnp.stack([1.0 - y1_B, y1_B], axis=-1)
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  probs_BC = jnp.exp(logp_BC)
  if stop_gradient:
    probs_BC = jax.lax.stop_gradient(probs_BC)
  coef = logconf_coef(step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac, warmup=warmup)
  target_BC = (1.0 - coef) * labels_BC + coef * probs_BC
  loss_B = -jnp.sum(target_BC * logp_BC, axis=-1)
  return loss_B, {"coef": coef, "entropy_B": jax.lax.stop_gradient(_entropy(logp_BC))}


def window_loss(
  logits_BC: jax.Array, labels_BC: jax.Array, *, radius: float = 0.15
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Confidence-window loss (EleutherAI/w2s `confidence_window_loss`): xent only where the student is
  still uncertain.

  in_window = max_c p_c < 0.5 + radius (no gradient); loss_b = in_window_b · CE(y_b, p_b). The
  reference's batch value Σ_b loss_b / B is the mean of `loss_B` (examples outside count as 0). A radius
  above 0.5 keeps every example (the reference's 0.51 for ground-truth training), i.e. plain xent;
  `midweak_radius` gives the reference's `radius="midweak"`.

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C].
    radius: half-width of the window around 0.5 (0.15 in the reference).

  Returns:
    (loss_B, {"in_window_B": 0/1, "frac_in_window"}).
  """
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  in_window_B = jax.lax.stop_gradient(jnp.max(jnp.exp(logp_BC), axis=-1) < 0.5 + radius)
  xent_B = -jnp.sum(labels_BC.astype(jnp.float32) * logp_BC, axis=-1)
  in_window_B = in_window_B.astype(jnp.float32)
  return jnp.where(in_window_B > 0, xent_B, 0.0), {
    "in_window_B": in_window_B, "frac_in_window": jnp.mean(in_window_B)}


def midweak_radius(labels_NC: np.ndarray | jax.Array) -> float:
  """The reference's `radius="midweak"`: the median weak confidence over the training set,
  median_n (max_c y_nc − 0.5) (= |y_n1 − 0.5| for two classes).

  Args:
    labels_NC: weak soft labels of the whole weak-labelled training set [N, C].
  """
  labels_NC = np.asarray(labels_NC, np.float64)
  return float(np.median(labels_NC.max(axis=-1) - 0.5))


def kl_loss(logits_BC: jax.Array, labels_BC: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """KL(y ‖ p) = Σ_c y_c (log y_c − log p_c), 0·log 0 = 0 (EleutherAI/w2s `kl_divergence_loss`,
  `F.kl_div(log p, y, reduction="batchmean")` = mean of `loss_B`). xent minus the labels' entropy: same
  gradient, but 0 at the optimum p = y.

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C].

  Returns:
    (loss_B, {}).
  """
  labels_BC = labels_BC.astype(jnp.float32)
  safe_BC = jnp.where(labels_BC > 0, labels_BC, 1.0)
  neg_entropy_B = jnp.sum(jnp.where(labels_BC > 0, labels_BC * jnp.log(safe_BC), 0.0), axis=-1)
  return _soft_xent(logits_BC, labels_BC) + neg_entropy_B, {}


def confidence_penalty_loss(
  logits_BC: jax.Array, labels_BC: jax.Array, *, beta: float = 0.75
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """xent minus the student's entropy, differentiated: CE(y, p) − β·H(p) (the confidence penalty of
  Pereyra et al. 2017, arXiv 1701.06548; EleutherAI/w2s branch `entropy`, commit f674b2d, β = 0.75).
  β > 0 discourages confident predictions; β < 0 rewards them (entropy minimisation).

  Args:
    logits_BC: student logits [B, C].
    labels_BC: weak soft labels [B, C].
    beta: weight of the entropy bonus.

  Returns:
    (loss_B, {"entropy_B": H(p)}).
  """
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  entropy_B = _entropy(logp_BC)
  xent_B = -jnp.sum(labels_BC.astype(jnp.float32) * logp_BC, axis=-1)
  return xent_B - beta * entropy_B, {"entropy_B": jax.lax.stop_gradient(entropy_B)}


W2S_LOSSES = {
  "xent": xent_loss, "logconf": logconf_loss, "product": product_loss, "entropy": entropy_loss,
  "window": window_loss, "kl": kl_loss, "confidence_penalty": confidence_penalty_loss,
}
# Losses that take the training progress `step_frac` (the objectives pass step / total_steps).
STEP_FRAC_LOSSES = ("logconf", "entropy")
