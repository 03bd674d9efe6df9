"""Causal attention that skips the masked upper triangle: query blocks against their key prefix only.

A full-sequence pass (training, scoring, prefill from an empty cache) masks every key after its query,
so of the [T, T] logits only the lower triangle matters. `blocked_causal_attention` splits the queries
into blocks of `block` rows and attends block i to keys [0, end of block i) only: with n blocks it
computes (n + 1) / (2n) of the logits (5/8 at n = 4), the rest being exactly the entries the mask
would zero. Each block runs the dense attention it is given (the model passes
`transformer.dot_product_attention`), so it equals that function up to float32 summation order,
forward and backward, for every mask that allows no key after its query (what `attention_mask` builds
from equal query and key indices). The blocks are a static Python loop: shapes are known at trace
time and XLA sees n independent, smaller attention problems.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 64

# attend(q_BTNH, k_BSKH, v_BSKH, mask_BTS) -> out_BTNH: the dense attention run on each block.
Attend = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def blocked_causal_attention(
  q_BTNH: jax.Array,
  k_BTKH: jax.Array,
  v_BTKH: jax.Array,
  mask_BTT: jax.Array,
  attend: Attend,
  *,
  block: int = DEFAULT_BLOCK,
) -> jax.Array:
  """Grouped-query self-attention over a causal mask, skipping key blocks after each query block.

  Args:
    q_BTNH: queries (RoPE applied), N = K * G.
    k_BTKH: keys of the same T positions (RoPE applied).
    v_BTKH: values.
    mask_BTT: True where query t may attend to key s; must be False wherever s > t (causal), which
      is not checked (it would cost a pass over the mask).
    attend: the dense attention of one query block against its keys, e.g.
      `functools.partial(transformer.dot_product_attention, scale=..., softcap=...)`.
    block: query rows per block (the last block may be shorter).

  Returns:
    out_BTNH as `attend` returns it.
  """
  T = q_BTNH.shape[1]
  if k_BTKH.shape[1] != T:
    raise ValueError(f"blocked causal attention needs as many keys as queries, got {k_BTKH.shape[1]} and {T}")
  if block < 1:
    raise ValueError(f"block must be >= 1, got {block}")
  outs = []
  for start in range(0, T, block):
    end = min(start + block, T)
    outs.append(attend(q_BTNH[:, start:end], k_BTKH[:, :end], v_BTKH[:, :end], mask_BTT[:, start:end, :end]))
  return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]
