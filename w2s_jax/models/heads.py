"""Heads on top of the `Transformer` backbone: sequence classification and per-token values.

Shape legend: B batch, L length, D d_model, C classes.

The classifier follows openai/weak-to-strong (`weak_to_strong/model.py`): a bias-free linear score
head, initialised to zeros, read at the last real token of each sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models.presets import ModelConfig
from w2s_jax.models.transformer import Transformer, make_param


def last_token_index(
  segment_ids_BL: jax.Array | None = None,
  lengths_B: jax.Array | None = None,
  *,
  length: int | None = None,
) -> jax.Array:
  """Index [B] of each row's last real token.

  Args:
    segment_ids_BL: 0 = padding; the last index with a nonzero id is used (left or right padding).
    lengths_B: number of real tokens of right-padded rows (used when `segment_ids_BL` is None).
    length: L, used when both are None (every row is full).
  """
  if segment_ids_BL is not None:
    L = segment_ids_BL.shape[1]
    index_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None, :], segment_ids_BL.shape)
    return jnp.max(jnp.where(segment_ids_BL != 0, index_BL, 0), axis=1)
  if lengths_B is not None:
    return jnp.asarray(lengths_B, jnp.int32) - 1
  if length is None:
    raise ValueError("Pass segment_ids_BL, lengths_B or length.")
  return jnp.full((1,), length - 1, jnp.int32)


class ClassifierHead(nnx.Module):
  """Linear D -> C read at the last real token; float32 logits [B, C]."""

  def __init__(
    self,
    d_model: int,
    num_classes: int,
    *,
    zero_init: bool = True,
    use_bias: bool = False,
    param_dtype: str = "float32",
    rngs: nnx.Rngs,
  ):
    std = 0.0 if zero_init else d_model**-0.5
    self.kernel_DC = make_param(
      rngs, (d_model, num_classes), ("embed", None), std=std, dtype=jnp.dtype(param_dtype)
    )
    self.use_bias = use_bias
    if use_bias:
      self.bias_C = make_param(None, (num_classes,), (None,), std=0.0, dtype=jnp.dtype(param_dtype))

  def __call__(
    self,
    hidden_BLD: jax.Array,
    *,
    segment_ids_BL: jax.Array | None = None,
    lengths_B: jax.Array | None = None,
  ) -> jax.Array:
    """Scores the hidden state at `last_token_index(segment_ids_BL, lengths_B)` of each row."""
    B, L, _ = hidden_BLD.shape
    last_B = jnp.broadcast_to(last_token_index(segment_ids_BL, lengths_B, length=L), (B,))
    last_BD = jnp.take_along_axis(hidden_BLD, last_B[:, None, None], axis=1)[:, 0, :]
    logits_BC = last_BD.astype(jnp.float32) @ self.kernel_DC[...].astype(jnp.float32)
    if self.use_bias:
      logits_BC = logits_BC + self.bias_C[...].astype(jnp.float32)[None, :]
    return logits_BC


class ValueHead(nnx.Module):
  """Per-token scalar D -> 1 with bias; float32 values [B, L]."""

  def __init__(
    self, d_model: int, *, zero_init: bool = True, param_dtype: str = "float32", rngs: nnx.Rngs
  ):
    std = 0.0 if zero_init else d_model**-0.5
    pdt = jnp.dtype(param_dtype)
    self.kernel_D1 = make_param(rngs, (d_model, 1), ("embed", None), std=std, dtype=pdt)
    self.bias_1 = make_param(None, (1,), (None,), std=0.0, dtype=pdt)

  def __call__(self, hidden_BLD: jax.Array) -> jax.Array:
    """Hidden states [B, L, D] -> float32 values [B, L]."""
    values_BL1 = jnp.einsum(
      "BLD,DO->BLO", hidden_BLD.astype(jnp.float32), self.kernel_D1[...].astype(jnp.float32)
    )
    return values_BL1[..., 0] + self.bias_1[...].astype(jnp.float32)[0]


class SequenceClassifier(nnx.Module):
  """Backbone + `ClassifierHead` (the weak-to-strong classifier): tokens [B, L] -> logits [B, C].

  One sequence per row (left or right padded); packed rows are not supported.
  """

  def __init__(self, cfg: ModelConfig, num_classes: int, *, zero_init: bool = True, rngs: nnx.Rngs):
    self.backbone = Transformer(cfg, rngs=rngs)
    self.head = ClassifierHead(
      cfg.d_model, num_classes, zero_init=zero_init, param_dtype=cfg.param_dtype, rngs=rngs
    )

  def __call__(
    self,
    tokens_BL: jax.Array,
    *,
    segment_ids_BL: jax.Array | None = None,
    positions_BL: jax.Array | None = None,
  ) -> jax.Array:
    """Float32 class logits [B, C] read at each row's last token with a nonzero segment id."""
    hidden_BLD = self.backbone.hidden(
      tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL
    )
    return self.head(hidden_BLD, segment_ids_BL=segment_ids_BL)


class ValueModel(nnx.Module):
  """Backbone + `ValueHead`: tokens [B, L] -> float32 values [B, L] (reward / critic models)."""

  def __init__(self, cfg: ModelConfig, *, zero_init: bool = True, rngs: nnx.Rngs):
    self.backbone = Transformer(cfg, rngs=rngs)
    self.head = ValueHead(cfg.d_model, zero_init=zero_init, param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(
    self,
    tokens_BL: jax.Array,
    *,
    segment_ids_BL: jax.Array | None = None,
    positions_BL: jax.Array | None = None,
  ) -> jax.Array:
    """Float32 values [B, L] (padding positions hold finite, meaningless values)."""
    hidden_BLD = self.backbone.hidden(
      tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL
    )
    return self.head(hidden_BLD)
