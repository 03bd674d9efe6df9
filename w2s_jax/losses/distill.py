"""Distillation losses: generalized JSD (GKD) on full distributions and on-policy reverse-KL token rewards.

Both work in either direction of the weak-to-strong question: a strong teacher distilled into a weak
student, or a weak teacher supervising a strong student.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def generalized_jsd_loss(
  student_logits_BLV: jax.Array,
  teacher_logits_BLV: jax.Array,
  mask_BL: jax.Array,
  *,
  beta: float = 0.5,
  temperature: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token generalized Jensen-Shannon divergence between teacher T and student S (GKD).

  M = β·T + (1−β)·S;  JSD_β = β·KL(T‖M) + (1−β)·KL(S‖M)   (Agarwal et al. 2024, arXiv 2306.13649).
  β = 0 is the forward KL(T‖S) and β = 1 the reverse KL(S‖T) (TRL's `generalized_jsd_loss` limits);
  for 0 < β < 1 it is finite, at most the binary entropy H(β) (log 2 at β = ½). Logits are divided by
  `temperature` first.

  Args:
    student_logits_BLV: student next-token logits [B, L, V] (gradients flow through these).
    teacher_logits_BLV: teacher logits on the same positions [B, L, V] (treated as constants).
    mask_BL: 1 on the tokens distilled on, 0 elsewhere [B, L].
    beta: the interpolation β in [0, 1].
    temperature: softmax temperature applied to both.

  Returns:
    (loss_BL, 0 off the mask; metrics with `forward_kl_BL` and `reverse_kl_BL`).
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  log_s = jax.nn.log_softmax(student_logits_BLV.astype(jnp.float32) / temperature, axis=-1)
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits_BLV).astype(jnp.float32) / temperature,
                             axis=-1)
  p_s, p_t = jnp.exp(log_s), jnp.exp(log_t)
  forward_kl = jnp.sum(p_t * (log_t - log_s), axis=-1)
  reverse_kl = jnp.sum(p_s * (log_s - log_t), axis=-1)
  if beta == 0.0:
    loss = forward_kl
  elif beta == 1.0:
    loss = reverse_kl
  else:
    log_m = jnp.logaddexp(log_t + jnp.log(beta), log_s + jnp.log1p(-beta))
    kl_t_m = jnp.sum(p_t * (log_t - log_m), axis=-1)
    kl_s_m = jnp.sum(p_s * (log_s - log_m), axis=-1)
    loss = beta * kl_t_m + (1.0 - beta) * kl_s_m
  m = mask_BL.astype(jnp.float32)
  return loss * m, {"forward_kl_BL": forward_kl * m, "reverse_kl_BL": reverse_kl * m}


def reverse_kl_token_rewards(
  student_logprobs_BL: jax.Array, teacher_logprobs_BL: jax.Array, mask_BL: jax.Array
) -> jax.Array:
  """Per-token rewards of on-policy distillation: r_t = log T(y_t | y_<t) − log S(y_t | y_<t).

  With y sampled from the student S, E[−r_t] is the per-token reverse KL(S‖T); using r_t as the
  per-token advantage of a REINFORCE/PPO loss (no discounting, no baseline needed) minimises it
  (Agarwal et al. 2024; Lu & Thinking Machines 2025, "On-Policy Distillation").

  Args:
    student_logprobs_BL: log-probs of the sampled tokens under the student [B, L] (sampling policy).
    teacher_logprobs_BL: log-probs of the same tokens under the teacher [B, L].
    mask_BL: 1 on completion tokens [B, L].

  Returns:
    rewards_BL, 0 off the mask; constants (no gradient).
  """
  r = jax.lax.stop_gradient(teacher_logprobs_BL - student_logprobs_BL)
  return jnp.where(mask_BL > 0, r, 0.0).astype(jnp.float32)
