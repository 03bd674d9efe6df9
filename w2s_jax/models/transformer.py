"""One Flax NNX decoder for Llama 3, Qwen2/2.5, Qwen3, Gemma 2/3 and SmolLM2.

Family differences are fields of `ModelConfig` (see `presets.py`), never subclasses. Weights use
the Hugging Face layouts up to a transpose/reshape (RoPE in the non-interleaved "rotate-half"
convention), so HF checkpoints load without permutation (`_hf_mapping.py`).

Shape legend: B batch, L length (T query length and S key length where they differ), D d_model,
N query heads, K kv heads, G = N // K query heads per kv head, H head_dim, F d_ff, V vocab.

Masks. `segment_ids_BL` is an int array where 0 marks padding; a token attends to tokens at the
same or earlier *index* with the same nonzero segment id (and, in sliding-window layers, fewer than
`window` indices back). One array thus gives padding masks (left or right) and packing masks; for
packing the caller restarts `positions_BL` at 0 in each segment. Padding query rows attend to
themselves only, so every row stays finite.

Dtypes. Parameters live in `cfg.param_dtype`; matmuls run in `cfg.dtype` (params and activations
are cast to it); RMSNorm, softmax, RoPE angles and the final logits are float32.

Initialisation (for training from scratch): embedding ~ N(0, 1/D) so that tied logits start with
unit variance; every input projection (q, k, v, gate, up, untied LM head) ~ N(0, 1/fan_in); the
projections that write into the residual stream (o, down) are further scaled by
1/sqrt(2 * n_layers) (GPT-2's residual scaling); biases 0; norm scales 1 (stored as 0 when
`norm_offset` is 1, as Gemma does).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.causal_attention import blocked_causal_attention
from w2s_jax.models.presets import ATTENTION_IMPLEMENTATIONS, ModelConfig, RopeScaling, remat_choice

_MASK_VALUE = float(np.finfo(np.float32).min)


def make_param(
  rngs: nnx.Rngs | None,
  shape: Sequence[int],
  names: tuple[str | None, ...],
  *,
  std: float,
  dtype: jnp.dtype,
  fill: float = 0.0,
) -> nnx.Param:
  """Creates a parameter ~ N(0, std^2) (filled with `fill` when std == 0) with logical axis names.

  Under a mesh (`jax.set_mesh`) the value is sharded at creation through the logical axis rules in
  context (`nnx.logical_axis_rules`), which must then name every logical axis used here ('vocab',
  'embed', 'mlp', 'heads', 'kv_heads', 'head_dim'; map one to None to replicate it): an unmapped
  name is taken for a mesh axis and fails. With no mesh the value is left unsharded and the names
  stay in the `out_sharding` metadata for `nnx.get_partition_spec`.
  """
  if std > 0.0:
    value = std * jax.random.normal(rngs.params(), tuple(shape), dtype)
  else:
    value = jnp.full(tuple(shape), fill, dtype)
  has_mesh = not jax.sharding.get_abstract_mesh().empty
  return nnx.Param(value, out_sharding=names, eager_sharding=has_mesh)


def dense(
  x: jax.Array, w: jax.Array, *, n_in: int = 1, preferred_element_type: jnp.dtype | None = None
) -> jax.Array:
  """x[..., *in] @ w[*in, *out] -> [..., *out], computed as one 2-D matmul.

  `w`'s first `n_in` axes contract with `x`'s last `n_in` axes. Flattening to 2-D is a speed choice:
  XLA:CPU runs the gradients of dot_generals with several batch-like dimensions (e.g. "BLD,DF->BLF")
  ~1.5x slower than the same work as plain matrix products.
  """
  in_shape, out_shape = w.shape[:n_in], w.shape[n_in:]
  lead = x.shape[: x.ndim - n_in]
  x2 = x.reshape(-1, math.prod(in_shape))
  w2 = w.reshape(math.prod(in_shape), math.prod(out_shape))
  y = jnp.dot(x2, w2, preferred_element_type=preferred_element_type)
  return y.reshape(*lead, *out_shape)


# ------------------------------------------------------------------------------------------------
# Building blocks.
# ------------------------------------------------------------------------------------------------


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32: y = x / rms(x) * (offset + scale)."""

  def __init__(self, dim: int, *, eps: float, offset: float, param_dtype: jnp.dtype):
    self.eps = eps
    self.offset = offset
    self.scale_D = make_param(None, (dim,), (None,), std=0.0, fill=1.0 - offset, dtype=param_dtype)

  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    """Normalises the last axis of `x_BLD` (any leading shape); returns the input dtype."""
    x32 = x_BLD.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    scale = self.offset + self.scale_D[...].astype(jnp.float32)
    y = y * scale.reshape((1,) * (x32.ndim - 1) + scale.shape)
    return y.astype(x_BLD.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
  """Inverse frequencies [H/2] of RoPE, optionally llama3- or linear-scaled (as in transformers)."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if scaling is None:
    return inv_freq.astype(np.float32)
  if scaling.kind == "linear":
    return (inv_freq / scaling.factor).astype(np.float32)
  if scaling.kind != "llama3":
    raise ValueError(f"Unknown rope scaling kind {scaling.kind!r}; use 'llama3' or 'linear'.")
  old_len = scaling.original_max_position
  low_wavelen = old_len / scaling.low_freq_factor
  high_wavelen = old_len / scaling.high_freq_factor
  wavelen = 2.0 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = (old_len / wavelen - scaling.low_freq_factor) / (
    scaling.high_freq_factor - scaling.low_freq_factor
  )
  smoothed = (1.0 - smooth) * scaled / scaling.factor + smooth * scaled
  is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def apply_rope(x_BLNH: jax.Array, positions_BL: jax.Array, inv_freq_h: np.ndarray) -> jax.Array:
  """Rotates [B, L, heads, H] by position in the rotate-half layout (pairs (i, i + H/2))."""
  angles_BLh = positions_BL.astype(jnp.float32)[:, :, None] * jnp.asarray(inv_freq_h)[None, None, :]
  sin_BL1h = jnp.sin(angles_BLh)[:, :, None, :]
  cos_BL1h = jnp.cos(angles_BLh)[:, :, None, :]
  x1, x2 = jnp.split(x_BLNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BL1h - x2 * sin_BL1h, x2 * cos_BL1h + x1 * sin_BL1h], axis=-1)
  return out.astype(x_BLNH.dtype)


def attention_mask(
  q_segment_BT: jax.Array,
  kv_segment_BS: jax.Array,
  q_index_BT: jax.Array,
  kv_index_BS: jax.Array,
  *,
  sliding_window: int | None = None,
) -> jax.Array:
  """Boolean mask [B, T, S]: same nonzero segment, causal by index, optional sliding window.

  Query rows with segment 0 (padding) attend to the key with the same index only, so they stay
  finite. With a KV cache, `kv_index_BS` is the cache slot of each key and `q_index_BT` that of each
  query.
  """
  q_idx = q_index_BT[:, :, None]
  kv_idx = kv_index_BS[:, None, :]
  q_seg = q_segment_BT[:, :, None]
  kv_seg = kv_segment_BS[:, None, :]
  mask_BTS = (q_seg == kv_seg) & (kv_seg != 0) & (kv_idx <= q_idx)
  if sliding_window is not None:
    mask_BTS &= kv_idx > q_idx - sliding_window
  return mask_BTS | ((q_seg == 0) & (kv_idx == q_idx))


def dot_product_attention(
  q_BTNH: jax.Array,
  k_BSKH: jax.Array,
  v_BSKH: jax.Array,
  mask_BTS: jax.Array,
  *,
  scale: float,
  softcap: float | None = None,
) -> jax.Array:
  """Grouped-query attention without repeating kv heads; logits and softmax in float32.

  Args:
    q_BTNH: queries (RoPE applied), N = K * G.
    k_BSKH: keys (RoPE applied).
    v_BSKH: values.
    mask_BTS: True where query t may attend to key s.
    scale: multiplier of q.k (head_dim ** -0.5 or query_pre_attn_scalar ** -0.5).
    softcap: optional tanh soft-capping of the scaled logits (Gemma 2).

  Returns:
    out_BTNH in the dtype of `v_BSKH`.
  """
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  G = N // K
  # Fold each kv head's G query heads into its query rows: one [G*T, H] x [H, S] product per (batch,
  # kv head) is ~1.3x faster on CPU (fwd+bwd) than G*K small ones, and k/v are never repeated.
  q_BKQH = q_BTNH.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, H)
  k_BKSH = k_BSKH.transpose(0, 2, 1, 3)
  v_BKSH = v_BSKH.transpose(0, 2, 1, 3)
  logits_BKQS = jnp.einsum("BKQH,BKSH->BKQS", q_BKQH, k_BKSH, preferred_element_type=jnp.float32)
  logits_BKGTS = logits_BKQS.reshape(B, K, G, T, S) * scale
  if softcap is not None:
    logits_BKGTS = softcap * jnp.tanh(logits_BKGTS / softcap)
  logits_BKGTS = jnp.where(mask_BTS[:, None, None, :, :], logits_BKGTS, _MASK_VALUE)
  probs_BKQS = jax.nn.softmax(logits_BKGTS, axis=-1).reshape(B, K, G * T, S)
  out_BKQH = jnp.einsum("BKQS,BKSH->BKQH", probs_BKQS.astype(v_BSKH.dtype), v_BKSH)
  return out_BKQH.reshape(B, K, G, T, H).transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


class Attention(nnx.Module):
  """Multi-head attention with GQA, optional qkv biases, q/k norms, softcap and sliding window."""

  def __init__(self, cfg: ModelConfig, *, layer_idx: int, rngs: nnx.Rngs):
    D, N, K, H = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if N % K:
      raise ValueError(f"n_heads ({N}) must be a multiple of n_kv_heads ({K}).")
    if H % 2:
      raise ValueError(f"head_dim ({H}) must be even for RoPE.")
    if cfg.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention = {cfg.attention!r}; choose one of {list(ATTENTION_IMPLEMENTATIONS)}.")
    if cfg.attention == "dot_product" and cfg.attn_logit_softcap is not None:
      raise ValueError("attention='dot_product' has no logit soft-capping; use attention='einsum'.")
    pdt = jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.is_local = is_local_layer(cfg, layer_idx)
    in_std = D**-0.5
    out_std = (N * H) ** -0.5 / math.sqrt(2 * cfg.n_layers)
    self.q_DNH = make_param(rngs, (D, N, H), ("embed", "heads", "head_dim"), std=in_std, dtype=pdt)
    self.k_DKH = make_param(
      rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), std=in_std, dtype=pdt
    )
    self.v_DKH = make_param(
      rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), std=in_std, dtype=pdt
    )
    self.o_NHD = make_param(rngs, (N, H, D), ("heads", "head_dim", "embed"), std=out_std, dtype=pdt)
    if cfg.qkv_bias:
      self.q_bias_NH = make_param(None, (N, H), ("heads", "head_dim"), std=0.0, dtype=pdt)
      self.k_bias_KH = make_param(None, (K, H), ("kv_heads", "head_dim"), std=0.0, dtype=pdt)
      self.v_bias_KH = make_param(None, (K, H), ("kv_heads", "head_dim"), std=0.0, dtype=pdt)
    if cfg.qk_norm:
      norm_kw = dict(eps=cfg.norm_eps, offset=cfg.norm_offset, param_dtype=pdt)
      self.q_norm = RMSNorm(H, **norm_kw)
      self.k_norm = RMSNorm(H, **norm_kw)

  @property
  def inv_freq(self) -> np.ndarray:
    """RoPE inverse frequencies [H/2] of this layer (local layers may use their own theta)."""
    cfg = self.cfg
    if self.is_local and cfg.rope_local_theta is not None:
      return rope_inv_freq(cfg.head_dim, cfg.rope_local_theta, None)
    return rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

  def project_qkv(
    self, x_BLD: jax.Array, positions_BL: jax.Array
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns q_BLNH, k_BLKH (both normed and rotated) and v_BLKH in the compute dtype."""
    dt = x_BLD.dtype
    q_BLNH = dense(x_BLD, self.q_DNH[...].astype(dt))
    k_BLKH = dense(x_BLD, self.k_DKH[...].astype(dt))
    v_BLKH = dense(x_BLD, self.v_DKH[...].astype(dt))
    if self.cfg.qkv_bias:
      q_BLNH = q_BLNH + self.q_bias_NH[...].astype(dt)[None, None]
      k_BLKH = k_BLKH + self.k_bias_KH[...].astype(dt)[None, None]
      v_BLKH = v_BLKH + self.v_bias_KH[...].astype(dt)[None, None]
    if self.cfg.qk_norm:
      q_BLNH = self.q_norm(q_BLNH)
      k_BLKH = self.k_norm(k_BLKH)
    inv_freq = self.inv_freq
    return (
      apply_rope(q_BLNH, positions_BL, inv_freq),
      apply_rope(k_BLKH, positions_BL, inv_freq),
      v_BLKH,
    )

  def attend(
    self, q_BTNH: jax.Array, k_BSKH: jax.Array, v_BSKH: jax.Array, mask_BTS: jax.Array
  ) -> jax.Array:
    """Attends projected queries to (possibly cached) keys/values; returns out_BTD [B, T, D].

    `__call__` is project_qkv -> attend; a KV cache stores k/v between the two.
    """
    cfg = self.cfg
    scalar = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar is not None else cfg.head_dim
    if cfg.attention == "dot_product":
      out_BTNH = jax.nn.dot_product_attention(
        q_BTNH, k_BSKH.astype(q_BTNH.dtype), v_BSKH.astype(q_BTNH.dtype), mask=mask_BTS[:, None],
        scale=scalar**-0.5, implementation=None,
      )
    else:
      attend = functools.partial(dot_product_attention, scale=scalar**-0.5, softcap=cfg.attn_logit_softcap)
      if cfg.attention == "blocked" and q_BTNH.shape[1] == k_BSKH.shape[1]:  # a full-sequence pass
        out_BTNH = blocked_causal_attention(q_BTNH, k_BSKH, v_BSKH, mask_BTS, attend)
      else:
        out_BTNH = attend(q_BTNH, k_BSKH, v_BSKH, mask_BTS)
    return dense(out_BTNH, self.o_NHD[...].astype(q_BTNH.dtype), n_in=2)

  def __call__(self, x_BLD: jax.Array, positions_BL: jax.Array, mask_BLL: jax.Array) -> jax.Array:
    """Self-attention of `x_BLD` [B, L, D] under `mask_BLL` (already windowed for local layers)."""
    q_BLNH, k_BLKH, v_BLKH = self.project_qkv(x_BLD, positions_BL)
    return self.attend(q_BLNH, k_BLKH, v_BLKH, mask_BLL)


class GatedMLP(nnx.Module):
  """down(act(x @ gate) * (x @ up)): SwiGLU (silu) or GeGLU (gelu_tanh)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    if cfg.mlp_activation not in ("silu", "gelu_tanh"):
      raise ValueError(f"mlp_activation must be 'silu' or 'gelu_tanh', got {cfg.mlp_activation!r}.")
    D, F = cfg.d_model, cfg.d_ff
    pdt = jnp.dtype(cfg.param_dtype)
    self.activation = cfg.mlp_activation
    self.gate_DF = make_param(rngs, (D, F), ("embed", "mlp"), std=D**-0.5, dtype=pdt)
    self.up_DF = make_param(rngs, (D, F), ("embed", "mlp"), std=D**-0.5, dtype=pdt)
    down_std = F**-0.5 / math.sqrt(2 * cfg.n_layers)
    self.down_FD = make_param(rngs, (F, D), ("mlp", "embed"), std=down_std, dtype=pdt)

  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    """[B, L, D] -> [B, L, D] in the dtype of `x_BLD`."""
    dt = x_BLD.dtype
    gate_BLF = dense(x_BLD, self.gate_DF[...].astype(dt))
    up_BLF = dense(x_BLD, self.up_DF[...].astype(dt))
    if self.activation == "silu":
      act_BLF = jax.nn.silu(gate_BLF)
    else:
      act_BLF = jax.nn.gelu(gate_BLF, approximate=True)
    return dense(act_BLF * up_BLF, self.down_FD[...].astype(dt))


def is_local_layer(cfg: ModelConfig, layer_idx: int) -> bool:
  """Whether 0-based layer `layer_idx` uses sliding-window attention (every n-th is global)."""
  if cfg.sliding_window is None:
    return False
  return (layer_idx + 1) % cfg.sliding_window_pattern != 0


class Block(nnx.Module):
  """Pre-norm decoder block, with Gemma's extra post-attention / post-MLP norms when enabled."""

  def __init__(self, cfg: ModelConfig, *, layer_idx: int, rngs: nnx.Rngs):
    norm_kw = dict(eps=cfg.norm_eps, offset=cfg.norm_offset, param_dtype=jnp.dtype(cfg.param_dtype))
    self.post_norms = cfg.post_norms
    self.attn_norm = RMSNorm(cfg.d_model, **norm_kw)
    self.attn = Attention(cfg, layer_idx=layer_idx, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, **norm_kw)
    self.mlp = GatedMLP(cfg, rngs=rngs)
    if cfg.post_norms:
      self.post_attn_norm = RMSNorm(cfg.d_model, **norm_kw)
      self.post_mlp_norm = RMSNorm(cfg.d_model, **norm_kw)

  def __call__(self, x_BLD: jax.Array, positions_BL: jax.Array, mask_BLL: jax.Array) -> jax.Array:
    """One block on the residual stream [B, L, D]; `mask_BLL` as from `attention_mask`."""
    return self.after_attention(x_BLD, self.attn(self.attn_norm(x_BLD), positions_BL, mask_BLL))

  def after_attention(self, x_BLD: jax.Array, h_BLD: jax.Array) -> jax.Array:
    """The block after attention: `h_BLD` is the attention output of `attn_norm(x_BLD)`.

    Split out so that the KV-cache path (`kv_cache.py`) reuses the block's residual/MLP part.
    """
    if self.post_norms:
      h_BLD = self.post_attn_norm(h_BLD)
    x_BLD = x_BLD + h_BLD
    h_BLD = self.mlp(self.mlp_norm(x_BLD))
    if self.post_norms:
      h_BLD = self.post_mlp_norm(h_BLD)
    return x_BLD + h_BLD


def _run_block(
  block: Block, x_BLD: jax.Array, positions_BL: jax.Array, mask_BLL: jax.Array
) -> jax.Array:
  return block(x_BLD, positions_BL, mask_BLL)


@functools.cache
def block_runner(remat: str | bool) -> Callable[..., jax.Array]:
  """`_run_block` under the `ModelConfig.remat` choice: as is ("none"), or an `nnx.remat` whose
  checkpoint policy is `jax.checkpoint_policies.<name>` ("block": save nothing but the input)."""
  name = remat_choice(remat)
  if name == "none":
    return _run_block
  policy = None if name == "block" else getattr(jax.checkpoint_policies, name)
  return nnx.remat(_run_block, policy=policy)


# ------------------------------------------------------------------------------------------------
# The decoder.
# ------------------------------------------------------------------------------------------------


class Transformer(nnx.Module):
  """Decoder-only language model; see the module docstring for masks, dtypes and initialisation.

  Attributes:
    embedding_VD: token embeddings ('vocab', 'embed').
    blocks: `cfg.n_layers` decoder blocks.
    final_norm: RMSNorm applied to the last block's output.
    lm_head_DV: output projection ('embed', 'vocab'); absent when `cfg.tie_embeddings`.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pdt = jnp.dtype(cfg.param_dtype)
    D, V = cfg.d_model, cfg.vocab_size
    remat_choice(cfg.remat)  # a bad value fails here, not at the first forward pass
    self.cfg = cfg
    self.embedding_VD = make_param(rngs, (V, D), ("vocab", "embed"), std=D**-0.5, dtype=pdt)
    self.blocks = nnx.List([Block(cfg, layer_idx=i, rngs=rngs) for i in range(cfg.n_layers)])
    self.final_norm = RMSNorm(D, eps=cfg.norm_eps, offset=cfg.norm_offset, param_dtype=pdt)
    if not cfg.tie_embeddings:
      self.lm_head_DV = make_param(rngs, (D, V), ("embed", "vocab"), std=D**-0.5, dtype=pdt)

  def embed(self, tokens_BL: jax.Array) -> jax.Array:
    """Token embeddings [B, L, D] in the compute dtype (times sqrt(D) when `scale_embeddings`)."""
    dt = jnp.dtype(self.cfg.dtype)
    x_BLD = jnp.take(self.embedding_VD[...], tokens_BL, axis=0).astype(dt)
    if self.cfg.scale_embeddings:
      # Like HF, the scale is rounded to the compute dtype first (sqrt(1152) -> 34.0 in bf16).
      x_BLD = x_BLD * jnp.asarray(self.cfg.d_model**0.5, dtype=dt)
    return x_BLD

  def hidden(
    self,
    tokens_BL: jax.Array,
    *,
    positions_BL: jax.Array | None = None,
    segment_ids_BL: jax.Array | None = None,
  ) -> jax.Array:
    """Runs the backbone.

    Args:
      tokens_BL: int token ids.
      positions_BL: RoPE positions; defaults to arange(L) in every row.
      segment_ids_BL: int, 0 = padding; tokens attend within their own segment. Default: all ones.

    Returns:
      hidden_BLD after the final norm, in the compute dtype.
    """
    cfg = self.cfg
    B, L = tokens_BL.shape
    index_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None, :], (B, L))
    if positions_BL is None:
      positions_BL = index_BL
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones((B, L), jnp.int32)
    global_mask_BLL = attention_mask(segment_ids_BL, segment_ids_BL, index_BL, index_BL)
    local_mask_BLL = None
    if cfg.sliding_window is not None:
      local_mask_BLL = attention_mask(
        segment_ids_BL, segment_ids_BL, index_BL, index_BL, sliding_window=cfg.sliding_window
      )
    run = block_runner(cfg.remat)
    x_BLD = self.embed(tokens_BL)
    for i, block in enumerate(self.blocks):
      mask_BLL = local_mask_BLL if is_local_layer(cfg, i) else global_mask_BLL
      x_BLD = run(block, x_BLD, positions_BL, mask_BLL)
    return self.final_norm(x_BLD)

  def logits_from_hidden(self, hidden_BLD: jax.Array) -> jax.Array:
    """Projects hidden states to float32 vocabulary logits [B, L, V] (soft-capped if configured)."""
    dt = hidden_BLD.dtype
    if self.cfg.tie_embeddings:
      logits_BLV = dense(
        hidden_BLD, self.embedding_VD[...].astype(dt).T, preferred_element_type=jnp.float32
      )
    else:
      logits_BLV = dense(
        hidden_BLD, self.lm_head_DV[...].astype(dt), preferred_element_type=jnp.float32
      )
    cap = self.cfg.final_logit_softcap
    if cap is not None:
      logits_BLV = cap * jnp.tanh(logits_BLV / cap)
    return logits_BLV

  def __call__(
    self,
    tokens_BL: jax.Array,
    *,
    positions_BL: jax.Array | None = None,
    segment_ids_BL: jax.Array | None = None,
  ) -> jax.Array:
    """Float32 next-token logits [B, L, V]; arguments as in `hidden`."""
    hidden_BLD = self.hidden(tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL)
    return self.logits_from_hidden(hidden_BLD)
