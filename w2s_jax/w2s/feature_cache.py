"""Frozen features of a pretrained checkpoint, computed once and kept on disk for every truncated rung.

One forward pass through the deepest block a sweep needs yields the residual stream after every block, so
the rungs `ckpt@2`, `ckpt@8`, `ckpt@30` of one checkpoint cost one pass over the data, not three. What is
kept (a `Request`):

  * `last` / `mean`: a rung's pooled feature [N, D] — the final norm applied to the residual stream after
    block `layer`, read at each example's last real token (`last`, openai/weak-to-strong's readout) or
    averaged over its real tokens (`mean`). A linear probe on these is `train.mode = "probe"`.
  * `tokens`: the residual stream after block `layer` at every real position [N, L, D] (pre-norm; L = the
    data's longest example), the input of the top blocks a `top`/`lora` student trains (`top_mode.py`).
    Layer 0 is the token embedding.

Entries live under `pretrain.cache_root() / "features"`, content-addressed by the checkpoint's bytes
(SHA-256, `rungs.file_digest`), the encoded data (SHA-256 of its token ids and segment ids, so the
tokenizer, the template and the record order are all in the key), the layer, the kind (pooling) and the
stored dtype: reused across seeds, losses, rungs and reruns, and recomputed when any of them changes.
Files are written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from w2s_jax.atomic_file import write_atomic
from w2s_jax.models.transformer import Transformer, attention_mask, is_local_layer
from w2s_jax.train.pretrain import cache_root
from w2s_jax.w2s.classify import Encoded
from w2s_jax.w2s.rungs import Checkpoint

KINDS = ("last", "mean", "tokens")
FORMAT = "v1"  # bump when what an entry holds changes


@dataclasses.dataclass(frozen=True)
class Request:
  """One cached array: `kind` (one of `KINDS`) of the residual stream after block `layer` (0 = embedding)."""

  layer: int
  kind: str


def residual_stream(model: Transformer, tokens_BL: jax.Array, segment_ids_BL: jax.Array, upto: int
                    ) -> list[jax.Array]:
  """The residual stream x_0 (embedding), x_1, ..., x_upto (after each block, before the final norm).

  Computed as `Transformer.hidden` does (same masks and positions, right-padded rows): `model.hidden` of
  a model truncated to k blocks is `model.final_norm(x_k)`.

  Args:
    model: the backbone.
    tokens_BL, segment_ids_BL: right-padded ids; segment 0 marks padding.
    upto: the last block to run (<= model.cfg.n_layers).

  Returns:
    upto + 1 arrays hidden_BLD.
  """
  cfg = model.cfg
  B, L = tokens_BL.shape
  index_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None, :], (B, L))
  global_mask_BLL = attention_mask(segment_ids_BL, segment_ids_BL, index_BL, index_BL)
  local_mask_BLL = None
  if cfg.sliding_window is not None:
    local_mask_BLL = attention_mask(segment_ids_BL, segment_ids_BL, index_BL, index_BL,
                                    sliding_window=cfg.sliding_window)
  x_BLD = model.embed(tokens_BL)
  out = [x_BLD]
  for i in range(upto):
    mask_BLL = local_mask_BLL if is_local_layer(cfg, i) else global_mask_BLL
    x_BLD = model.blocks[i](x_BLD, index_BL, mask_BLL)
    out.append(x_BLD)
  return out


def pool(hidden_BLD: jax.Array, segment_ids_BL: jax.Array, kind: str) -> jax.Array:
  """[B, D] float32: the hidden state at each row's last real token (`last`) or its real-token mean."""
  mask_BL = (segment_ids_BL != 0).astype(jnp.float32)
  if kind == "mean":
    return jnp.sum(hidden_BLD.astype(jnp.float32) * mask_BL[..., None], 1) / jnp.sum(mask_BL, 1)[:, None]
  if kind == "last":
    L = segment_ids_BL.shape[1]
    last_B = jnp.max(jnp.where(segment_ids_BL != 0, jnp.arange(L)[None, :], 0), axis=1)
    return jnp.take_along_axis(hidden_BLD, last_B[:, None, None], axis=1)[:, 0].astype(jnp.float32)
  raise ValueError(f"unknown pooling {kind!r}; choose 'last' or 'mean'")


@functools.partial(jax.jit, static_argnums=(0, 4))
def _forward(graphdef: nnx.GraphDef, params: Any, tokens_BL: jax.Array, segment_ids_BL: jax.Array,
             requests: tuple[Request, ...]) -> list[jax.Array]:
  model = nnx.merge(graphdef, params)
  xs = residual_stream(model, tokens_BL, segment_ids_BL, max(r.layer for r in requests))
  out = []
  for r in requests:
    if r.kind == "tokens":
      out.append(xs[r.layer].astype(jnp.float32))
    else:
      out.append(pool(model.final_norm(xs[r.layer]), segment_ids_BL, r.kind))
  return out


def data_digest(data: Encoded) -> str:
  """SHA-256 of an encoded set's token ids and segment ids (shape included)."""
  h = hashlib.sha256(str(data.tokens_NL.shape).encode())
  h.update(np.ascontiguousarray(data.tokens_NL, np.int32).tobytes())
  h.update(np.ascontiguousarray(data.segment_ids_NL, np.int32).tobytes())
  return h.hexdigest()


def _save_atomic(path: Path, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array)
  write_atomic(path, buffer.getvalue())


class FeatureCache:
  """Disk cache of `Request`s of a checkpoint on an encoded set (see the module docstring).

  Attributes:
    root: the cache folder (`pretrain.cache_root() / "features"` by default).
    dtype: stored dtype of `tokens` entries ("float32" or "float16"; pooled features stay float32).
    forward_passes: batches run through the model by this object (0 when everything came from disk).
  """

  def __init__(self, root: str | Path | None = None, *, dtype: str = "float32", batch_size: int = 32):
    if dtype not in ("float32", "float16"):
      raise ValueError(f"train.cache_dtype {dtype!r}: choose 'float32' or 'float16'")
    if root is None:
      root = cache_root() / "features"
    self.root, self.dtype, self.batch_size = Path(root), dtype, batch_size
    self.forward_passes = 0
    self._memory: dict[Path, np.ndarray] = {}

  def path(self, ckpt: Checkpoint, data: Encoded, request: Request) -> Path:
    """Where `request` of `ckpt` on `data` is kept."""
    dt = self.dtype if request.kind == "tokens" else "float32"
    return (self.root / f"{ckpt.digest[:20]}-{FORMAT}" / data_digest(data)[:20]
            / f"{request.kind}-L{request.layer}-{dt}.npy")

  def get(self, ckpt: Checkpoint, data: Encoded, requests: Sequence[Request]) -> dict[Request, np.ndarray]:
    """The requested arrays: read from memory or disk, the missing ones computed in one forward pass
    (through the deepest missing layer) and written.

    `tokens` entries are [N, L', D] with L' the longest real length in `data` (padding columns dropped:
    read them with `data.segment_ids_NL[:, :L']`).

    Raises:
      ValueError: for an unknown kind or a layer outside 0..num_layers.
    """
    for r in requests:
      if r.kind not in KINDS:
        raise ValueError(f"feature kind {r.kind!r}: choose one of {KINDS}")
      if not 0 <= r.layer <= ckpt.model_cfg.n_layers:
        raise ValueError(f"layer {r.layer} of {ckpt.name}: choose 0..{ckpt.model_cfg.n_layers}")
    out, missing = {}, []
    for r in dict.fromkeys(requests):
      p = self.path(ckpt, data, r)
      if p not in self._memory and p.exists():
        self._memory[p] = np.load(p)
      if p in self._memory:
        out[r] = self._memory[p]
      else:
        missing.append(r)
    if missing:
      for r, array in zip(missing, self._compute(ckpt, data, tuple(missing)), strict=True):
        p = self.path(ckpt, data, r)
        p.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(p, array)
        self._memory[p] = out[r] = array
    return out

  def _compute(self, ckpt: Checkpoint, data: Encoded, requests: tuple[Request, ...]) -> list[np.ndarray]:
    n, bs = len(data), self.batch_size
    width = int(np.max(np.sum(data.segment_ids_NL != 0, 1)))  # right padding: real tokens come first
    chunks: list[list[np.ndarray]] = [[] for _ in requests]
    desc = f"features {ckpt.name} blocks<= {max(r.layer for r in requests)}"
    for start in tqdm(range(0, n, bs), desc=desc, unit="batch", leave=False):
      t = data.tokens_NL[start:start + bs, :width]
      s = data.segment_ids_NL[start:start + bs, :width]
      m = len(t)
      if m < bs:  # one compiled shape for every batch
        t = np.concatenate([t, np.repeat(t[-1:], bs - m, 0)])
        s = np.concatenate([s, np.repeat(s[-1:], bs - m, 0)])
      self.forward_passes += 1
      for chunk, r, y in zip(chunks, requests, _forward(ckpt.graphdef, ckpt.params, t, s, requests),
                             strict=True):
        y = np.asarray(y)[:m]
        chunk.append(y.astype(self.dtype) if r.kind == "tokens" else y)
    return [np.concatenate(c) for c in chunks]
