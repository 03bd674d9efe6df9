"""Loss reductions by name, returned as (numerator, denominator).

A reduction returns the sum and the weight it is divided by, never the ratio alone, so that gradient
accumulation and data parallelism can add numerators and denominators across micro-batches and devices
and divide once: the result is then the same as the full-batch loss.

| name                      | value                          | used by                  |
|---------------------------|--------------------------------|--------------------------|
| `token-mean`              | Σ_{b,l} m·x / Σ_{b,l} m        | SFT, DAPO, verl default  |
| `seq-mean-token-mean`     | (1/B') Σ_b [Σ_l m·x / Σ_l m]   | GRPO paper               |
| `seq-mean-token-sum`      | (1/B') Σ_b Σ_l m·x             | sequence log-likelihoods |
| `seq-mean-token-sum-norm` | (1/B') Σ_b Σ_l m·x / L         | Dr. GRPO (constant L)    |

B' counts the sequences with at least one unmasked token; L is the padded length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCTIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(values_BL: jax.Array, mask_BL: jax.Array, mode: str) -> tuple[jax.Array, jax.Array]:
  """Reduces per-token values by the named mode.

  Args:
    values_BL: per-token values [B, L].
    mask_BL: 1 where a token counts, 0 elsewhere [B, L].
    mode: one of `REDUCTIONS`.

  Returns:
    (numerator, denominator), f32 scalars; the loss is numerator / max(denominator, tiny).
  """
  mask_BL = mask_BL.astype(jnp.float32)
  values_BL = values_BL.astype(jnp.float32)
  masked_sum_B = jnp.sum(values_BL * mask_BL, axis=-1)
  tokens_B = jnp.sum(mask_BL, axis=-1)
  seqs = jnp.sum((tokens_B > 0).astype(jnp.float32))
  if mode == "token-mean":
    return jnp.sum(masked_sum_B), jnp.sum(tokens_B)
  if mode == "seq-mean-token-mean":
    return jnp.sum(masked_sum_B / jnp.maximum(tokens_B, 1.0)), seqs
  if mode == "seq-mean-token-sum":
    return jnp.sum(masked_sum_B), seqs
  if mode == "seq-mean-token-sum-norm":
    return jnp.sum(masked_sum_B) / values_BL.shape[-1], seqs
  raise ValueError(f"unknown reduction {mode!r}; choose one of {REDUCTIONS}")


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator, 0 where the denominator is 0 (an empty batch has no loss)."""
  return jnp.where(denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1.0), 0.0)


def reduce(values_BL: jax.Array, mask_BL: jax.Array, mode: str) -> jax.Array:
  """The reduced scalar of `aggregate`."""
  return safe_ratio(*aggregate(values_BL, mask_BL, mode))
