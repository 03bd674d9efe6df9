"""`attention="blocked"`: causal attention over query blocks and their key prefix only.

The reference is the default dense attention (`transformer.dot_product_attention`, the einsum path)
on the same inputs: the blocked form drops only logits the mask sets to the float32 minimum, whose
softmax weight is exactly 0, so values and gradients agree to float32 summation order (1e-5).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import GEMMA_TINY
from w2s_jax.models import PRESETS, Transformer
from w2s_jax.models.causal_attention import blocked_causal_attention
from w2s_jax.models.transformer import attention_mask, dot_product_attention
from w2s_jax.sampling import Sampler, SamplingConfig


def _packed_mask(B: int, T: int, window: int | None = None) -> jax.Array:
  """Row 0 one segment; row 1 two packed segments; row 2 left padding then a segment."""
  seg = np.ones((B, T), np.int32)
  seg[1, T // 3:] = 2
  seg[2, : T // 4] = 0
  idx = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  return attention_mask(jnp.asarray(seg), jnp.asarray(seg), idx, idx, sliding_window=window)


@functools.partial(jax.jit, static_argnames=("block", "softcap"))
def _attention_and_vjp(q, k, v, mask, ct, *, block, softcap):
  """Output of the dense attention (`block=None`) or the blocked one, and the vjp of `ct` w.r.t. q, k, v.

  Jitted: op by op, the blocked form compiles every slice and small product of every block (hundreds of
  tiny programs); one program per case computes the same values.
  """
  dense = functools.partial(dot_product_attention, scale=q.shape[-1] ** -0.5, softcap=softcap)
  attend = dense if block is None else functools.partial(blocked_causal_attention, attend=dense, block=block)
  out, vjp = jax.vjp(lambda *a: attend(*a, mask), q, k, v)
  return out, vjp(ct)


@pytest.mark.parametrize("block,softcap,window", [(16, None, None), (32, 30.0, None), (7, None, 5),
                                                  (200, None, None)])
def test_blocked_matches_dense_values_and_gradients(block, softcap, window):
  B, T, N, K, H = 3, 70, 4, 2, 16  # T not a multiple of the block: a shorter last block
  keys = jax.random.split(jax.random.key(0), 4)
  q, ct = (jax.random.normal(k, (B, T, N, H)) for k in keys[:2])
  k_, v = (jax.random.normal(k, (B, T, K, H)) for k in keys[2:])
  mask = _packed_mask(B, T, window)
  ref, ref_grads = _attention_and_vjp(q, k_, v, mask, ct, block=None, softcap=softcap)
  got, got_grads = _attention_and_vjp(q, k_, v, mask, ct, block=block, softcap=softcap)
  np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
  for g, r in zip(got_grads, ref_grads, strict=True):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


def test_blocked_refuses_unequal_lengths_and_bad_block():
  q, kv = jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 6, 1, 8))
  attend = functools.partial(dot_product_attention, scale=1.0)
  with pytest.raises(ValueError, match="as many keys as queries"):
    blocked_causal_attention(q, kv, kv, jnp.ones((1, 4, 6), bool), attend)
  with pytest.raises(ValueError, match="block must be >= 1"):
    blocked_causal_attention(q, q[:, :, :1], q[:, :, :1], jnp.ones((1, 4, 4), bool), attend, block=0)


def _pair(cfg, attention="blocked"):
  """A model of `cfg` with perturbed weights and the same weights under `attention`."""
  base = Transformer(cfg, rngs=nnx.Rngs(0))
  state = nnx.state(base, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(base, jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                                for x, k in zip(leaves, keys, strict=True)]))
  other = nnx.eval_shape(lambda: Transformer(dataclasses.replace(cfg, attention=attention), rngs=nnx.Rngs(0)))
  nnx.update(other, nnx.state(base, nnx.Param))
  return base, other


def _train_losses(model, tokens, steps=3):
  """Losses of `steps` AdamW steps on next-token cross-entropy of `tokens` [B, L + 1]."""
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.adamw(3e-3)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(tokens[:, :-1])
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))
    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = tx.init(params), []
  for _ in range(steps):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  return losses


@pytest.mark.parametrize("cfg", [dataclasses.replace(PRESETS["tiny"], max_seq_len=160), GEMMA_TINY],
                         ids=["tiny_gqa", "gemma_softcap_sliding"])
def test_blocked_model_trains_like_the_default(cfg):
  """Sequences of 150 tokens (3 blocks of 64, the last one shorter): same losses over 3 AdamW steps."""
  base, blocked = _pair(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, size=(2, 151)), jnp.int32)
  ref, got = _train_losses(base, tokens), _train_losses(blocked, tokens)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert ref[-1] < ref[0]  # the steps did move the weights


def test_blocked_greedy_decoding_matches_the_default():
  """Prefill of a 70-token prompt goes through the blocked path; greedy tokens and log-probs stay."""
  base, blocked = _pair(PRESETS["tiny"])
  prompts = np.random.default_rng(2).integers(3, 512, size=(2, 70)).astype(np.int32)
  mask = np.ones(prompts.shape, bool)
  mask[1, :5] = False  # left padding
  outs = []
  for m in (base, blocked):
    graphdef, params = nnx.split(m)
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0)
    outs.append(Sampler(graphdef, cfg)(params, prompts, mask, jax.random.key(0)))
  np.testing.assert_array_equal(outs[0].completions_BN, outs[1].completions_BN)
  np.testing.assert_allclose(outs[0].logprobs_BS, outs[1].logprobs_BS, atol=1e-5)
