"""The `top` and `top_lora` modes: train the top n blocks of a pretrained rung above its cached trunk.

A rung `ckpt@k` is blocks 1..k of a checkpoint, its final norm and a head. With `train.top_blocks = n`, the
blocks 1..k−n are frozen: their output (the residual stream after block k−n, per token) is computed once
per data set and kept on disk (`feature_cache.py`), and each training runs only blocks k−n+1..k, the final
norm and a zero-initialised head on it (`TopClassifier`), initialised from the checkpoint. So a 30-block
135M student costs, per step, n blocks' forward and backward pass instead of 30 (the last of them only at
the position the head reads).

`top` trains all of that (n blocks + final norm + head); `top_lora` trains zero-initialised LoRA adapters
on the n blocks' `train.lora_targets` projections + the head, the blocks themselves frozen. Trainings are
short and saved by the sweep as a whole, so they are not checkpointed mid-way; they run in memory through the
runtime's optimizer builder and train step (`classify.fit_classifier`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.heads import ClassifierHead, last_token_index
from w2s_jax.models.lora import TRAINABLE, apply_lora
from w2s_jax.models.presets import ModelConfig
from w2s_jax.models.transformer import Block, RMSNorm, attention_mask, is_local_layer
from w2s_jax.w2s import classify


class TopClassifier(nnx.Module):
  """Blocks `first`..`first + n − 1` of a decoder + its final norm + a 2-class head, on residual states.

  Called like a `SequenceClassifier` (so `classify.classifier_objective` and `classify.predict` drive it),
  but its first argument is the residual stream entering block `first`, hidden_BLD, not token ids.
  """

  def __init__(self, cfg: ModelConfig, first: int, n: int, *, rngs: nnx.Rngs):
    pdt = jnp.dtype(cfg.param_dtype)
    self.cfg, self.first = cfg, first
    self.blocks = nnx.List([Block(cfg, layer_idx=first + i, rngs=rngs) for i in range(n)])
    self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, offset=cfg.norm_offset, param_dtype=pdt)
    self.head = ClassifierHead(cfg.d_model, 2, zero_init=True, param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(self, hidden_BLD: jax.Array, *, segment_ids_BL: jax.Array) -> jax.Array:
    """Float32 logits [B, 2] read at each row's last real token (rows right-padded).

    The head reads one position, so the last block runs its queries, attention output and MLP at that
    position only (its keys and values at every position): the same logits as the full block, at about
    a sixth of its cost.
    """
    B, L = segment_ids_BL.shape
    index_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None, :], (B, L))
    full_BLL = attention_mask(segment_ids_BL, segment_ids_BL, index_BL, index_BL)
    window = self.cfg.sliding_window
    local_BLL = None if window is None else attention_mask(segment_ids_BL, segment_ids_BL, index_BL,
                                                           index_BL, sliding_window=window)
    x_BLD = hidden_BLD.astype(jnp.dtype(self.cfg.dtype))
    for i, block in enumerate(self.blocks[:-1]):
      x_BLD = block(x_BLD, index_BL, local_BLL if is_local_layer(self.cfg, self.first + i) else full_BLL)
    last = self.blocks[-1]
    last_B1 = last_token_index(segment_ids_BL)[:, None]
    q_BLNH, k_BLKH, v_BLKH = last.attn.project_qkv(last.attn_norm(x_BLD), index_BL)
    q_B1NH = jnp.take_along_axis(q_BLNH, last_B1[:, :, None, None], axis=1)
    is_local = is_local_layer(self.cfg, self.first + len(self.blocks) - 1)
    mask_B1L = attention_mask(jnp.ones_like(last_B1), segment_ids_BL, last_B1, index_BL,
                              sliding_window=window if is_local else None)
    x_B1D = jnp.take_along_axis(x_BLD, last_B1[:, :, None], axis=1)
    x_B1D = last.after_attention(x_B1D, last.attn.attend(q_B1NH, k_BLKH, v_BLKH, mask_B1L))
    return self.head(self.final_norm(x_B1D), lengths_B=jnp.ones((B,), jnp.int32))


def top_classifier(cfg: ModelConfig, params: Any, n: int, *, seed: int) -> TopClassifier:
  """A `TopClassifier` over the last `n` of the `cfg.n_layers` blocks in a backbone's `params`, with their
  pretrained weights and final norm, and a fresh zero head.

  Raises:
    ValueError: when n is not in 1..cfg.n_layers.
  """
  k = cfg.n_layers
  if not 1 <= n <= k:
    raise ValueError(f"train.top_blocks = {n}: a rung with {k} blocks can train 1..{k} of them")
  model = TopClassifier(cfg, k - n, n, rngs=nnx.Rngs(seed))
  pure = nnx.to_pure_dict(params)
  top = {"blocks": {i: pure["blocks"][k - n + i] for i in range(n)}, "final_norm": pure["final_norm"]}
  top = jax.tree.map(lambda a: jnp.array(a, copy=True), top)  # the step donates them: never the rung's
  _, state = nnx.split(model)
  own = nnx.to_pure_dict(state)
  own.update(top)
  nnx.replace_by_pure_dict(state, own)
  nnx.update(model, state)
  return model


def as_hidden_set(data: classify.Encoded, hidden_NLD: np.ndarray) -> classify.Encoded:
  """`data` with its token ids replaced by cached residual states [N, L', D] (segment ids cut to L'), the
  input `TopClassifier` reads where `classify` helpers pass `tokens`."""
  width = hidden_NLD.shape[1]
  return classify.Encoded(hidden_NLD, data.segment_ids_NL[:, :width], data.hard_N, data.soft_NC,
                          data.truncated, data.rows_N)


def train_top(
  cfg: ModelConfig, params: Any, train: classify.Encoded, evals: Sequence[classify.Encoded], loss: str, *,
  n: int, steps: int, batch_size: int, lr: float, seed: int, lora: dict[str, Any] | None = None,
  loss_kwargs: dict[str, Any] | None = None, desc: str = "top", optimizer: Mapping[str, Any] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
  """Trains the top `n` blocks (or LoRA adapters on them when `lora` = {targets, rank, alpha}) + final norm
  + head on `train` (an `as_hidden_set`), then predicts.

  `optimizer`: an `optimizer` section (the sweep's `train.optimizer`); None =
  `classify.default_optimizer(lr, steps)`.

  Returns:
    (class probabilities [N, 2] per eval set, {"final_train_loss", "trainable_params"}).
  """
  model = top_classifier(cfg, params, n, seed=seed)
  if lora is None:
    graphdef, trainable = nnx.split(model)
    frozen = None
  else:
    apply_lora(model, targets=lora["targets"], rank=lora["rank"], alpha=lora["alpha"], rngs=nnx.Rngs(seed))
    graphdef, trainable, frozen = nnx.split(model, TRAINABLE, ...)
  full, extra = classify.fit_classifier(
    graphdef, trainable, frozen, train, loss, steps=steps, batch_size=batch_size, seed=seed,
    optimizer=optimizer or classify.default_optimizer(lr, steps), loss_kwargs=loss_kwargs, desc=desc)
  return [classify.predict(graphdef, full, d) for d in evals], extra
