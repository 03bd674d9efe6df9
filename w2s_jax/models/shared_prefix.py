"""Shared-prompt forward: each prompt runs once, its continuations attend to its keys and values.

In a GRPO batch the G samples of a prompt repeat it; in a DPO batch chosen and rejected share it. Running
the rows [N·G, P + C] through `Transformer.hidden` computes every prompt token G times. Here the prompt
[N, P] runs once and each of its G continuations [N, G, C] attends, in every layer, to

    [the prompt's keys/values (computed once, read by all G continuations) ; its own causal keys/values].

Gradients flow through the prompt's forward into every parameter, so the result (hidden states, logits,
log-probs and their gradients) equals the full forward of the concatenated rows up to float summation
order. Every layer runs on one flat token stream (the N·P prompt tokens, then the N·G·C continuation
tokens), so the projections and MLP are one matrix product each; only attention sees the two parts.

Masks follow `transformer.attention_mask` with the prompt at slots 0..P-1 and the continuation at slots
P..P+C-1: a token attends to tokens of the same nonzero segment id at the same or an earlier slot;
padding query rows attend to themselves only. Sliding-window layers limit a continuation query's
prompt keys by *position* (`q_pos - k_pos < window`), which equals the full forward's slot distance when
the row's real tokens are contiguous (left-padded prompts, as the sampler lays them out) and equals the
row written without the gap when the prompt is right-padded (a DPO prompt/response split). Within the
prompt and within a continuation the window is by slot, as in the full forward.

Every `ModelConfig` feature is supported (GQA, qkv biases, q/k norms, local RoPE theta, soft-caps,
sliding windows, post-norms, scaled embeddings, tied/untied heads, `dtype`, `remat`); LoRA adapters read
through their wrapped parameters as in the full forward. `attention="dot_product"` and `"blocked"` only
choose how the full forward computes attention; this path always uses the project's einsum attention
(and the blocked form for the prompt's self-attention when configured), equal to rounding.

Legend: N prompts, P prompt slots, G continuations per prompt, R = N·G rows, C continuation slots,
T = N·P + R·C tokens, D d_model, Nh query heads, K kv heads, q = Nh // K, H head_dim, V vocab.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models import transformer as tfm
from w2s_jax.models.causal_attention import blocked_causal_attention
from w2s_jax.models.presets import remat_choice
from w2s_jax.models.transformer import Block, Transformer

__all__ = ["shared_prefix_hidden", "shared_prefix_logits"]


def _cross_mask(
  q_seg_NGC: jax.Array, kv_seg_NP: jax.Array, q_pos_NGC: jax.Array, kv_pos_NP: jax.Array,
  window: int | None,
) -> jax.Array:
  """Continuation query -> prompt key mask [N, G, C, P]: same nonzero segment (and within the window)."""
  q_seg, kv_seg = q_seg_NGC[..., None], kv_seg_NP[:, None, None, :]
  mask = (q_seg == kv_seg) & (kv_seg != 0)
  if window is not None:
    mask &= kv_pos_NP[:, None, None, :] > q_pos_NGC[..., None] - window
  return mask


def _continuation_attention(
  q_RCNH: jax.Array, k_RCKH: jax.Array, v_RCKH: jax.Array, kp_NPKH: jax.Array, vp_NPKH: jax.Array,
  mask_NGCS: jax.Array, *, scale: float, softcap: float | None,
) -> jax.Array:
  """Continuation queries over [prompt keys ; own keys] with one softmax; returns out_RCNH.

  The prompt's k/v [N, P, K, H] are read by all G continuations of their prompt without being copied:
  each (prompt, kv head) is one [G·q·C, H] x [H, P] product. `mask_NGCS` is [N, G, C, P + C].
  """
  N, P, K, H = kp_NPKH.shape
  R, C, Nh, _ = q_RCNH.shape
  G, q = R // N, Nh // K
  q_NKGqCH = q_RCNH.reshape(N, G, C, K, q, H).transpose(0, 3, 1, 4, 2, 5)
  k_NGCKH, v_NGCKH = k_RCKH.reshape(N, G, C, K, H), v_RCKH.reshape(N, G, C, K, H)
  f32 = jnp.float32
  logits_p = jnp.einsum("NKGqCH,NPKH->NKGqCP", q_NKGqCH, kp_NPKH, preferred_element_type=f32)
  logits_c = jnp.einsum("NKGqCH,NGDKH->NKGqCD", q_NKGqCH, k_NGCKH, preferred_element_type=f32)
  logits = jnp.concatenate([logits_p, logits_c], axis=-1) * scale
  if softcap is not None:
    logits = softcap * jnp.tanh(logits / softcap)
  logits = jnp.where(mask_NGCS[:, None, :, None], logits, tfm._MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_RCKH.dtype)
  out = jnp.einsum("NKGqCP,NPKH->NKGqCH", probs[..., :P], vp_NPKH)
  out = out + jnp.einsum("NKGqCD,NGDKH->NKGqCH", probs[..., P:], v_NGCKH)
  return out.transpose(0, 2, 4, 1, 3, 5).reshape(R, C, Nh, H)


def _shared_block(
  block: Block, x_1TD: jax.Array, pos_1T: jax.Array, mask_pp_NPP: jax.Array, mask_cc_RCC: jax.Array,
  mask_cp_NGCP: jax.Array,
) -> jax.Array:
  """One decoder block on the flat stream [1, T, D] (prompt tokens first); masks as from `_masks`."""
  attn, cfg = block.attn, block.attn.cfg
  N, P = mask_pp_NPP.shape[:2]
  R, C = mask_cc_RCC.shape[:2]
  q_1TNH, k_1TKH, v_1TKH = attn.project_qkv(block.attn_norm(x_1TD), pos_1T)
  split = N * P
  qp, kp, vp = (a[0, :split].reshape(N, P, *a.shape[2:]) for a in (q_1TNH, k_1TKH, v_1TKH))
  qc, kc, vc = (a[0, split:].reshape(R, C, *a.shape[2:]) for a in (q_1TNH, k_1TKH, v_1TKH))
  scalar = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar is not None else cfg.head_dim
  attend = functools.partial(tfm.dot_product_attention, scale=scalar**-0.5, softcap=cfg.attn_logit_softcap)
  if cfg.attention == "blocked":
    out_p = blocked_causal_attention(qp, kp, vp, mask_pp_NPP, attend)
  else:
    out_p = attend(qp, kp, vp, mask_pp_NPP)
  G = R // N
  mask_NGCS = jnp.concatenate([mask_cp_NGCP, mask_cc_RCC.reshape(N, G, C, C)], axis=-1)
  out_c = _continuation_attention(qc, kc, vc, kp, vp, mask_NGCS, scale=scalar**-0.5,
                                  softcap=cfg.attn_logit_softcap)
  out_1TNH = jnp.concatenate([out_p.reshape(-1, *out_p.shape[2:]), out_c.reshape(-1, *out_c.shape[2:])])[None]
  h_1TD = tfm.dense(out_1TNH, attn.o_NHD[...].astype(out_1TNH.dtype), n_in=2)
  return block.after_attention(x_1TD, h_1TD)


@functools.cache
def _block_runner(remat: str | bool) -> Callable[..., jax.Array]:
  """`_shared_block` under the `ModelConfig.remat` choice (as `transformer.block_runner`)."""
  name = remat_choice(remat)
  if name == "none":
    return _shared_block
  policy = None if name == "block" else getattr(jax.checkpoint_policies, name)
  return nnx.remat(_shared_block, policy=policy)


def _masks(
  seg_NP: jax.Array, pos_NP: jax.Array, seg_NGC: jax.Array, pos_NGC: jax.Array, window: int | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(prompt self mask [N, P, P], continuation self mask [R, C, C], continuation->prompt [N, G, C, P])."""
  N, P = seg_NP.shape
  _, G, C = seg_NGC.shape
  idx_NP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32)[None], (N, P))
  idx_RC = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32)[None], (N * G, C))
  seg_RC = seg_NGC.reshape(N * G, C)
  return (tfm.attention_mask(seg_NP, seg_NP, idx_NP, idx_NP, sliding_window=window),
          tfm.attention_mask(seg_RC, seg_RC, idx_RC, idx_RC, sliding_window=window),
          _cross_mask(seg_NGC, seg_NP, pos_NGC, pos_NP, window))


def shared_prefix_hidden(
  model: Transformer,
  prompt_tokens_NP: jax.Array,
  cont_tokens_NGC: jax.Array,
  *,
  prompt_positions_NP: jax.Array,
  prompt_segment_ids_NP: jax.Array,
  cont_positions_NGC: jax.Array,
  cont_segment_ids_NGC: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """The backbone over N prompts and their G continuations each, the prompts computed once.

  Equals `model.hidden` over the rows `concat(prompt_tokens_NP[n], cont_tokens_NGC[n, g])` with the
  positions and segment ids concatenated the same way (up to float summation order); see the module
  docstring for the masking rules.

  Args:
    model: the decoder (call inside jit).
    prompt_tokens_NP: int prompt ids [N, P].
    cont_tokens_NGC: int continuation ids [N, G, C].
    prompt_positions_NP, cont_positions_NGC: RoPE positions (a continuation's continue after its
      prompt's real length).
    prompt_segment_ids_NP, cont_segment_ids_NGC: int, 0 = padding.

  Returns:
    (prompt_hidden_NPD, cont_hidden_NGCD) after the final norm, in the compute dtype.
  """
  if not isinstance(model, Transformer):
    raise TypeError(f"shared_prefix_hidden needs a Transformer, got {type(model).__name__}")
  cfg = model.cfg
  N, P = prompt_tokens_NP.shape
  if cont_tokens_NGC.ndim != 3 or cont_tokens_NGC.shape[0] != N:
    raise ValueError(f"continuations must be [N={N}, G, C], got shape {cont_tokens_NGC.shape}")
  _, G, C = cont_tokens_NGC.shape
  seg_p, seg_c = prompt_segment_ids_NP.astype(jnp.int32), cont_segment_ids_NGC.astype(jnp.int32)
  global_masks = _masks(seg_p, prompt_positions_NP, seg_c, cont_positions_NGC, None)
  local_masks = None
  if cfg.sliding_window is not None:
    local_masks = _masks(seg_p, prompt_positions_NP, seg_c, cont_positions_NGC, cfg.sliding_window)
  tokens_1T = jnp.concatenate([prompt_tokens_NP.reshape(-1), cont_tokens_NGC.reshape(-1)])[None]
  pos_1T = jnp.concatenate([prompt_positions_NP.reshape(-1), cont_positions_NGC.reshape(-1)])[None]
  run = _block_runner(cfg.remat)
  x_1TD = model.embed(tokens_1T)
  for i, block in enumerate(model.blocks):
    masks = local_masks if tfm.is_local_layer(cfg, i) else global_masks
    x_1TD = run(block, x_1TD, pos_1T, *masks)
  h_TD = model.final_norm(x_1TD)[0]
  D = h_TD.shape[-1]
  return h_TD[: N * P].reshape(N, P, D), h_TD[N * P:].reshape(N, G, C, D)


def shared_prefix_logits(
  model: Transformer,
  prompt_tokens_NP: jax.Array,
  cont_tokens_NGC: jax.Array,
  *,
  prompt_positions_NP: jax.Array,
  prompt_segment_ids_NP: jax.Array,
  cont_positions_NGC: jax.Array,
  cont_segment_ids_NGC: jax.Array,
  last_prompt_index_N: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Float32 logits of each prompt's last slot [N, V] and of every continuation slot [N, G, C, V].

  Arguments as in `shared_prefix_hidden`; `last_prompt_index_N` is the slot whose logits predict each
  continuation's first token (default P - 1, the last slot of a left-padded prompt; for right-padded
  prompts pass each prompt's real length - 1). Only those N prompt slots are projected to the vocabulary.
  """
  hp_NPD, hc_NGCD = shared_prefix_hidden(
    model, prompt_tokens_NP, cont_tokens_NGC, prompt_positions_NP=prompt_positions_NP,
    prompt_segment_ids_NP=prompt_segment_ids_NP, cont_positions_NGC=cont_positions_NGC,
    cont_segment_ids_NGC=cont_segment_ids_NGC)
  if last_prompt_index_N is None:
    last_ND = hp_NPD[:, -1]
  else:
    last_ND = jnp.take_along_axis(hp_NPD, last_prompt_index_N[:, None, None].astype(jnp.int32), axis=1)[:, 0]
  return model.logits_from_hidden(last_ND[:, None])[:, 0], model.logits_from_hidden(hc_NGCD)
