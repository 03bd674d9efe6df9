"""KV cache for `Transformer`: prefill a left-padded block, then decode one token per row.

Layout. A `KVCache` holds per layer keys and values [B, K, S, H] (S = cache length in *slots*; kv heads
before slots so that one-token attention reads the cache without a transpose) and per
row `start_B`, the first real slot: prompts are **left-padded**, so slots [0, start_B) of row b are
padding and slot s holds the token at RoPE position s - start_B. A row's real tokens are contiguous
from `start_B` on; how far the cache is filled is the caller's bookkeeping (the sampler's `length_B`).
Keys at slots after the query's own slot are masked by causality, so stale entries beyond a row's end
(e.g. after a fork truncates a copied row) are never read and need no clearing. For the same reason a
decode step may run on a `window` (the first W slots) when every row's slot is < W: attention then
reads W slots instead of S (the sampler's decode phases). A *one-row* cache (`one_row`) holds a
single row's buffers without the batch axis ([K, S, H]): a decode loop at B = 1 carries it so that XLA
updates each buffer in place (with the [1, K, S, H] layout, a single-phase loop made XLA:CPU copy every
layer's buffers four times per step).

Numerics are those of `Transformer.__call__` on the same left-padded sequence: the same projections,
`attention_mask` (slot indices play the role of token indices, which equal positions up to the
per-row offset, so sliding windows agree), prefill through `dot_product_attention`, and for one-token
decode the same float32 logits / soft-cap / mask value / softmax written for the [B, K, S, H] layout
(`_decode_attention`); only the reduction shapes differ (one query row against S keys). With
`DecodeWeights` (`fuse_weights`, built once per decode loop) a decode step runs q|k|v as one matmul and
gate|up as one: the same products column by column, 4 matmuls per layer instead of 7.

Shape legend as in `transformer.py`; T is the number of new tokens per row, S the cache length.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from w2s_jax.models.presets import ModelConfig
from w2s_jax.models.transformer import (
  _MASK_VALUE,
  Attention,
  Block,
  Transformer,
  apply_rope,
  attention_mask,
  dense,
  is_local_layer,
)


@flax.struct.dataclass
class DecodeWeights:
  """Each layer's projections concatenated for one-token decode: one matmul for q|k|v, one for gate|up.

  Built once per decode call (`fuse_weights`), outside the loop: at decode batch sizes a matmul's
  cost is mostly reading its weights and per-op overhead, so 4 products per layer instead of 7 cut
  the step time (see `decode_step`).

  Attributes:
    qkv: one [D, (N + 2K) * H] array per layer, in the compute dtype.
    gate_up: one [D, 2F] array per layer, in the compute dtype.
  """

  qkv: tuple[jax.Array, ...]
  gate_up: tuple[jax.Array, ...]


def fuse_weights(model: Transformer) -> DecodeWeights:
  """The `DecodeWeights` of `model` (a copy of its q/k/v and gate/up weights, concatenated)."""
  dt = jnp.dtype(model.cfg.dtype)
  D = model.cfg.d_model
  qkv, gate_up = [], []
  for block in model.blocks:
    a, m = block.attn, block.mlp
    parts = [a.q_DNH[...], a.k_DKH[...], a.v_DKH[...]]
    qkv.append(jnp.concatenate([w.reshape(D, -1).astype(dt) for w in parts], axis=1))
    gate_up.append(jnp.concatenate([m.gate_DF[...].astype(dt), m.up_DF[...].astype(dt)], axis=1))
  return DecodeWeights(qkv=tuple(qkv), gate_up=tuple(gate_up))


@flax.struct.dataclass
class KVCache:
  """Per-layer key/value buffers and the per-row first real slot.

  Attributes:
    k: one [B, K, S, H] array per layer (RoPE applied), in the compute dtype; [K, S, H] in a one-row
      cache (`one_row`).
    v: one [B, K, S, H] (or [K, S, H]) array per layer.
    start_B: int32 first real (non-padding) slot of each row ([1] in a one-row cache).
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  start_B: jax.Array

  @property
  def size(self) -> int:
    """Cache length S in slots."""
    return self.k[0].shape[-2]

  @property
  def is_one_row(self) -> bool:
    """Whether the buffers lack the batch axis (`one_row`)."""
    return self.k[0].ndim == 3


def one_row(cache: KVCache) -> KVCache:
  """The one-row form of a B = 1 cache: buffers [K, S, H] (a reshape, no copy); `batched` undoes it."""
  if cache.k[0].shape[0] != 1:
    raise ValueError(f"one_row needs a cache of one row; this one has {cache.k[0].shape[0]}")
  return cache.replace(k=tuple(x[0] for x in cache.k), v=tuple(x[0] for x in cache.v))


def batched(cache: KVCache) -> KVCache:
  """The [1, K, S, H] form of a one-row cache (identity for a batched one)."""
  if not cache.is_one_row:
    return cache
  return cache.replace(k=tuple(x[None] for x in cache.k), v=tuple(x[None] for x in cache.v))


def init_cache(cfg: ModelConfig, start_B: jax.Array, size: int) -> KVCache:
  """A zero cache of `size` slots for rows whose first real slot is `start_B` [B]."""
  shape = (start_B.shape[0], cfg.n_kv_heads, size, cfg.head_dim)
  zeros = tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.n_layers))
  return KVCache(k=zeros, v=tuple(jnp.zeros_like(z) for z in zeros), start_B=start_B.astype(jnp.int32))


def _layer_masks(cfg: ModelConfig, seg_q, seg_kv, idx_q, idx_kv) -> tuple[jax.Array, jax.Array | None]:
  global_mask = attention_mask(seg_q, seg_kv, idx_q, idx_kv)
  local_mask = None
  if cfg.sliding_window is not None:
    local_mask = attention_mask(seg_q, seg_kv, idx_q, idx_kv, sliding_window=cfg.sliding_window)
  return global_mask, local_mask


def prefill(model: Transformer, cache: KVCache, tokens_BT: jax.Array) -> KVCache:
  """Writes keys/values of the left-padded block `tokens_BT` into slots [0, T) of every row.

  Args:
    model: the decoder.
    cache: a cache with S >= T whose `start_B` marks each row's padding (slots < start_B).
    tokens_BT: int token ids; entries in padding slots are ignored.

  Returns:
    The cache with slots [0, T) filled (padding slots hold finite values that are always masked).
  """
  cfg = model.cfg
  B, T = tokens_BT.shape
  slot_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T))
  seg_BT = (slot_BT >= cache.start_B[:, None]).astype(jnp.int32)
  positions_BT = jnp.maximum(slot_BT - cache.start_B[:, None], 0)
  global_mask, local_mask = _layer_masks(cfg, seg_BT, seg_BT, slot_BT, slot_BT)
  x_BTD = model.embed(tokens_BT)
  ks, vs = list(cache.k), list(cache.v)
  for i, block in enumerate(model.blocks):
    q_BTNH, k_BTKH, v_BTKH = block.attn.project_qkv(block.attn_norm(x_BTD), positions_BT)
    mask_BTT = local_mask if is_local_layer(cfg, i) else global_mask
    h_BTD = block.attn.attend(q_BTNH, k_BTKH, v_BTKH, mask_BTT)
    x_BTD = block.after_attention(x_BTD, h_BTD)
    k_BKTH = k_BTKH.transpose(0, 2, 1, 3).astype(ks[i].dtype)
    v_BKTH = v_BTKH.transpose(0, 2, 1, 3).astype(vs[i].dtype)
    ks[i] = jax.lax.dynamic_update_slice(ks[i], k_BKTH, (0, 0, 0, 0))
    vs[i] = jax.lax.dynamic_update_slice(vs[i], v_BKTH, (0, 0, 0, 0))
  return cache.replace(k=tuple(ks), v=tuple(vs))


def _decode_attention(
  attn: Attention, q_B1NH: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array, mask_B1S: jax.Array
) -> jax.Array:
  """`Attention.attend` for one query token against the [B, K, S, H] cache; returns out_B1D.

  The same math as `dot_product_attention` (GQA heads n = k * G + g, float32 logits, soft-cap, mask
  value, softmax), but contracting the cache in its stored layout: a [B, S, K, H] cache would be
  transposed (copied) per layer and step, which dominated decode time on CPU.
  """
  cfg = attn.cfg
  B, _, N, H = q_B1NH.shape
  K = k_BKSH.shape[1]
  scalar = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar is not None else cfg.head_dim
  q_BKGH = q_B1NH.reshape(B, K, N // K, H)
  logits_BKGS = jnp.einsum("BKGH,BKSH->BKGS", q_BKGH, k_BKSH, preferred_element_type=jnp.float32)
  logits_BKGS = logits_BKGS * scalar**-0.5
  if cfg.attn_logit_softcap is not None:
    logits_BKGS = cfg.attn_logit_softcap * jnp.tanh(logits_BKGS / cfg.attn_logit_softcap)
  logits_BKGS = jnp.where(mask_B1S[:, None, :, :], logits_BKGS, _MASK_VALUE)
  probs_BKGS = jax.nn.softmax(logits_BKGS, axis=-1)
  out_BKGH = jnp.einsum("BKGS,BKSH->BKGH", probs_BKGS.astype(v_BKSH.dtype), v_BKSH)
  out_B1NH = out_BKGH.reshape(B, 1, N, H)
  return dense(out_B1NH, attn.o_NHD[...].astype(q_B1NH.dtype), n_in=2)


def _project_qkv(attn: Attention, x_B1D: jax.Array, positions_B1: jax.Array, w_DX: jax.Array):
  """`Attention.project_qkv` with the q|k|v weights of `fuse_weights`: one matmul instead of three."""
  cfg = attn.cfg
  B, N, K, H = x_B1D.shape[0], cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  qkv_B1X = dense(x_B1D, w_DX)
  q_B1NH = qkv_B1X[..., : N * H].reshape(B, 1, N, H)
  k_B1KH = qkv_B1X[..., N * H : (N + K) * H].reshape(B, 1, K, H)
  v_B1KH = qkv_B1X[..., (N + K) * H :].reshape(B, 1, K, H)
  dt = x_B1D.dtype
  if cfg.qkv_bias:
    q_B1NH = q_B1NH + attn.q_bias_NH[...].astype(dt)[None, None]
    k_B1KH = k_B1KH + attn.k_bias_KH[...].astype(dt)[None, None]
    v_B1KH = v_B1KH + attn.v_bias_KH[...].astype(dt)[None, None]
  if cfg.qk_norm:
    q_B1NH, k_B1KH = attn.q_norm(q_B1NH), attn.k_norm(k_B1KH)
  inv_freq = attn.inv_freq
  return apply_rope(q_B1NH, positions_B1, inv_freq), apply_rope(k_B1KH, positions_B1, inv_freq), v_B1KH


def _after_attention(block: Block, x_B1D: jax.Array, h_B1D: jax.Array, w_DX: jax.Array) -> jax.Array:
  """`Block.after_attention` with the gate|up weights of `fuse_weights`: one matmul instead of two."""
  if block.post_norms:
    h_B1D = block.post_attn_norm(h_B1D)
  x_B1D = x_B1D + h_B1D
  F = w_DX.shape[1] // 2
  gu_B1X = dense(block.mlp_norm(x_B1D), w_DX)
  gate_B1F, up_B1F = gu_B1X[..., :F], gu_B1X[..., F:]
  act = jax.nn.silu if block.mlp.activation == "silu" else lambda g: jax.nn.gelu(g, approximate=True)
  h_B1D = dense(act(gate_B1F) * up_B1F, block.mlp.down_FD[...].astype(x_B1D.dtype))
  if block.post_norms:
    h_B1D = block.post_mlp_norm(h_B1D)
  return x_B1D + h_B1D


def _write(cache_x: jax.Array, new_B1KH: jax.Array, slot_B: jax.Array) -> jax.Array:
  """A layer's buffer with row b's slot `slot_B[b]` set to `new_B1KH[b, 0]` ([K, H]).

  Batched [B, K, S, H]: a scatter that drops slots >= S. One-row [K, S, H]: a dynamic-update-slice at
  slot_B[0] (< S), done in place by XLA.
  """
  if cache_x.ndim == 3:
    new_K1H = new_B1KH[0].transpose(1, 0, 2).astype(cache_x.dtype)
    return jax.lax.dynamic_update_slice(cache_x, new_K1H, (0, slot_B[0], 0))
  rows_B = jnp.arange(cache_x.shape[0])
  return cache_x.at[rows_B, :, slot_B].set(new_B1KH[:, 0].astype(cache_x.dtype), mode="drop")


def decode_step(
  model: Transformer,
  cache: KVCache,
  tokens_B: jax.Array,
  slot_B: jax.Array,
  weights: DecodeWeights | None = None,
) -> tuple[jax.Array, KVCache]:
  """Runs one token per row at cache slot `slot_B`, attending to slots [start_B, slot_B].

  Args:
    model: the decoder.
    cache: keys/values of slots [start_B, slot_B) must be filled; batched, or one-row (`one_row`, B = 1).
    tokens_B: int token of each row, at position slot_B - start_B.
    slot_B: int32 slot of each row's token; in a batched cache a slot >= S writes nothing (use it for
      finished rows, whose logits are then meaningless); a one-row cache needs slot_B < S.
    weights: `fuse_weights(model)`, built outside the decode loop (fewer, larger matmuls per step);
      None runs the model's own projections. Both give the same logits up to float summation order.

  Returns:
    (logits_BV float32 next-token logits, cache with the new keys/values written, in the input's form).
  """
  cfg = model.cfg
  B, S = tokens_B.shape[0], cache.size
  slot_B1 = slot_B[:, None]
  positions_B1 = jnp.maximum(slot_B1 - cache.start_B[:, None], 0)
  kv_slot_BS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32)[None], (B, S))
  kv_seg_BS = (kv_slot_BS >= cache.start_B[:, None]).astype(jnp.int32)
  q_seg_B1 = jnp.ones((B, 1), jnp.int32)
  global_mask, local_mask = _layer_masks(cfg, q_seg_B1, kv_seg_BS, slot_B1, kv_slot_BS)
  x_B1D = model.embed(tokens_B[:, None])
  ks, vs = list(cache.k), list(cache.v)
  for i, block in enumerate(model.blocks):
    h_B1D = block.attn_norm(x_B1D)
    if weights is None:
      q_B1NH, k_B1KH, v_B1KH = block.attn.project_qkv(h_B1D, positions_B1)
    else:
      q_B1NH, k_B1KH, v_B1KH = _project_qkv(block.attn, h_B1D, positions_B1, weights.qkv[i])
    ks[i], vs[i] = _write(ks[i], k_B1KH, slot_B), _write(vs[i], v_B1KH, slot_B)
    mask_B1S = local_mask if is_local_layer(cfg, i) else global_mask
    k_BKSH, v_BKSH = (ks[i][None], vs[i][None]) if cache.is_one_row else (ks[i], vs[i])
    h_B1D = _decode_attention(block.attn, q_B1NH, k_BKSH, v_BKSH, mask_B1S)
    if weights is None:
      x_B1D = block.after_attention(x_B1D, h_B1D)
    else:
      x_B1D = _after_attention(block, x_B1D, h_B1D, weights.gate_up[i])
  logits_B1V = model.logits_from_hidden(model.final_norm(x_B1D))
  return logits_B1V[:, 0], cache.replace(k=tuple(ks), v=tuple(vs))


def window(cache: KVCache, size: int) -> KVCache:
  """A copy of the first `size` slots of every row: a smaller cache for steps whose slots are all < size.

  Decode reads every slot of the cache it is given, so running the early steps on a window cuts the
  bytes read per step (attention is memory-bound on CPU); `write_window` puts the window back.
  """
  return cache.replace(k=tuple(x[..., :size, :] for x in cache.k), v=tuple(x[..., :size, :] for x in cache.v))


def write_window(cache: KVCache, part: KVCache) -> KVCache:
  """`cache` with its first `part.size` slots replaced by `part` (in place when `cache` is donated)."""
  put = lambda x, y: jax.lax.dynamic_update_slice(x, y.astype(x.dtype), (0,) * x.ndim)
  return cache.replace(k=tuple(map(put, cache.k, part.k)), v=tuple(map(put, cache.v, part.v)))


def take_rows(cache: KVCache, rows_R: jax.Array) -> KVCache:
  """The cache rows `rows_R` (a fork copies its parent's rows; the prefix is never recomputed)."""
  return jax.tree.map(lambda x: jnp.take(x, rows_R, axis=0), cache)


__all__ = [
  "DecodeWeights", "KVCache", "batched", "decode_step", "fuse_weights", "init_cache", "one_row", "prefill",
  "take_rows", "window", "write_window",
]
