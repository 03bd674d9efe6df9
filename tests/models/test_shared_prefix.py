"""The shared-prompt forward equals the full forward of the concatenated rows, values and gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models import get_preset, lora, shared_prefix
from w2s_jax.models.transformer import Transformer

shared_prefix_hidden = nnx.jit(shared_prefix.shared_prefix_hidden)  # jitted: eager dispatch is slow
shared_prefix_logits = nnx.jit(shared_prefix.shared_prefix_logits)
full_hidden = nnx.jit(lambda model, tok, pos, seg: model.hidden(tok, positions_BL=pos, segment_ids_BL=seg))

SMALL = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
             max_seq_len=512)
CONFIGS = {
  "llama": get_preset("tiny"),  # GQA, tied head
  "qwen": get_preset("qwen3-0.6b", **SMALL, tie_embeddings=False, qkv_bias=True),  # q/k norms, untied
  # softcaps, post-norms, scaled embeddings, local/global layers with a window that cuts the prompt
  "gemma": get_preset("gemma2-2b", **SMALL, query_pre_attn_scalar=16.0, sliding_window=4,
                      attn_logit_softcap=5.0, final_logit_softcap=3.0),
}


def _model(cfg, seed=0) -> Transformer:
  model = Transformer(cfg, rngs=nnx.Rngs(seed))
  # non-zero norms and biases so that every parameter matters
  leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def _rows(N, G, P, C, prompt_lens, cont_lens, seed=0):
  """Left-padded prompts [N, P] and right-padded continuations [N, G, C] (token ids and 0/1 masks)."""
  rng = np.random.default_rng(seed)
  p_tok = rng.integers(1, 512, (N, P)).astype(np.int32)
  p_mask = (np.arange(P)[None] >= P - np.asarray(prompt_lens)[:, None]).astype(np.int32)
  c_tok = rng.integers(1, 512, (N, G, C)).astype(np.int32)
  c_mask = (np.arange(C)[None, None] < np.asarray(cont_lens)[..., None]).astype(np.int32)
  return p_tok * p_mask, p_mask, c_tok * c_mask, c_mask


def _split_inputs(p_tok, p_mask, c_tok, c_mask):
  """Positions counting real tokens over the concatenated row, split back into prompt / continuation."""
  N, G, C = c_tok.shape
  p_pos = np.maximum(np.cumsum(p_mask, 1) - 1, 0)
  c_pos = p_mask.sum(1)[:, None, None] + np.cumsum(c_mask, 2) - 1
  c_pos = np.maximum(c_pos, 0)
  return dict(prompt_positions_NP=jnp.asarray(p_pos), prompt_segment_ids_NP=jnp.asarray(p_mask),
              cont_positions_NGC=jnp.asarray(c_pos), cont_segment_ids_NGC=jnp.asarray(c_mask))


def _full_rows(p_tok, p_mask, c_tok, c_mask):
  N, G, C = c_tok.shape
  rep = lambda a: np.repeat(a[:, None], G, axis=1)
  tok = np.concatenate([rep(p_tok), c_tok], axis=2).reshape(N * G, -1)
  mask = np.concatenate([rep(p_mask), c_mask], axis=2).reshape(N * G, -1)
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  return jnp.asarray(tok), jnp.asarray(pos), jnp.asarray(mask)


def _weights(N, G, C, V, seed=3):
  rng = np.random.default_rng(seed)
  w_last = jnp.asarray(rng.normal(size=(N, V)), jnp.float32)
  return w_last, jnp.asarray(rng.normal(size=(N, G, C, V)), jnp.float32)


def _shared_loss(model, p_tok, c_tok, inputs, w_last, w_cont, c_mask):
  last_NV, cont_NGCV = shared_prefix.shared_prefix_logits(model, jnp.asarray(p_tok), jnp.asarray(c_tok),
                                                          **inputs)
  G = c_tok.shape[1]
  lp_last = jax.nn.log_softmax(last_NV, -1)
  lp_cont = jax.nn.log_softmax(cont_NGCV, -1) * jnp.asarray(c_mask)[..., None]
  return G * jnp.sum(lp_last * w_last) + jnp.sum(lp_cont * w_cont)


def _full_loss(model, tok, pos, mask, P, w_last, w_cont, c_mask):
  N, G, C = c_mask.shape
  logits = model(tok, positions_BL=pos, segment_ids_BL=mask).reshape(N, G, P + C, -1)
  lp = jax.nn.log_softmax(logits, -1)
  lp_cont = lp[:, :, P:] * jnp.asarray(c_mask)[..., None]
  return jnp.sum(lp[:, :, P - 1] * w_last[:, None]) + jnp.sum(lp_cont * w_cont)


def _value_and_grad(loss, model, *args):
  graphdef, params = nnx.split(model, nnx.Param)
  f = lambda p: loss(nnx.merge(graphdef, p), *args)
  return jax.jit(jax.value_and_grad(f))(params)


def _assert_tree_close(a, b, rtol, atol):
  """Leaf by leaf; `atol` is relative to the leaf's largest entry (float32 sums of terms of that size)."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    y = np.asarray(y, np.float32)
    np.testing.assert_allclose(np.asarray(x, np.float32), y, rtol=rtol, atol=atol * np.abs(y).max(),
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("G", [1, 4])
def test_hidden_and_gradients_equal_the_full_forward(name, G):
  model = _model(CONFIGS[name])
  N, P, C = 3, 7, 5
  cont_lens = np.array([[5, 3, 0, 1], [2, 5, 4, 5], [1, 1, 5, 2]])[:, :G]
  p_tok, p_mask, c_tok, c_mask = _rows(N, G, P, C, [7, 3, 1], cont_lens)
  inputs = _split_inputs(p_tok, p_mask, c_tok, c_mask)
  tok, pos, mask = _full_rows(p_tok, p_mask, c_tok, c_mask)
  full_NGLD = full_hidden(model, tok, pos, mask).reshape(N, G, P + C, -1)
  hp, hc = shared_prefix_hidden(model, jnp.asarray(p_tok), jnp.asarray(c_tok), **inputs)
  for g in range(G):  # every slot, padding included (padding rows attend to themselves in both)
    np.testing.assert_allclose(hp, full_NGLD[:, g, :P], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hc, full_NGLD[:, :, P:], rtol=1e-5, atol=1e-5)
  w_last, w_cont = _weights(N, G, C, 512)
  v_full, g_full = _value_and_grad(_full_loss, model, tok, pos, mask, P, w_last, w_cont, c_mask)
  v_sh, g_sh = _value_and_grad(_shared_loss, model, p_tok, c_tok, inputs, w_last, w_cont, c_mask)
  np.testing.assert_allclose(v_sh, v_full, rtol=1e-5)
  _assert_tree_close(g_sh, g_full, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_result_does_not_depend_on_the_padding_width(name):
  model = _model(CONFIGS[name])
  N, G, P, C = 2, 3, 5, 4
  cont_lens = np.array([[4, 2, 3], [1, 4, 0]])
  p_tok, p_mask, c_tok, c_mask = _rows(N, G, P, C, [5, 2], cont_lens, seed=5)
  hp, hc = shared_prefix_hidden(model, jnp.asarray(p_tok), jnp.asarray(c_tok),
                                **_split_inputs(p_tok, p_mask, c_tok, c_mask))
  # 3 more slots of left padding on the prompts, 2 more of right padding on the continuations
  pad = lambda a, before, after: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(before, after)])
  p_tok2, p_mask2, c_tok2, c_mask2 = pad(p_tok, 3, 0), pad(p_mask, 3, 0), pad(c_tok, 0, 2), pad(c_mask, 0, 2)
  hp2, hc2 = shared_prefix_hidden(model, jnp.asarray(p_tok2), jnp.asarray(c_tok2),
                                  **_split_inputs(p_tok2, p_mask2, c_tok2, c_mask2))
  real_p = p_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(hp2)[:, 3:][real_p], np.asarray(hp)[real_p], rtol=1e-5, atol=1e-5)
  real_c = c_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(hc2)[:, :, :C][real_c], np.asarray(hc)[real_c], rtol=1e-5, atol=1e-5)


def test_right_padded_prompts_equal_the_rows_written_without_the_gap():
  """A DPO-style split: prompts right-padded, the last real prompt slot predicts the continuation."""
  model = _model(CONFIGS["gemma"])  # the sliding window measures positions across the gap
  N, G, P, C = 2, 2, 6, 4
  lens = np.array([6, 2])
  left_tok, left_mask, c_tok, c_mask = _rows(N, G, P, C, lens, np.array([[4, 3], [2, 4]]), seed=7)
  last_l, cont_l = shared_prefix_logits(model, jnp.asarray(left_tok), jnp.asarray(c_tok),
                                        **_split_inputs(left_tok, left_mask, c_tok, c_mask))
  right_tok = np.stack([np.roll(t, -(P - n)) for t, n in zip(left_tok, lens)])
  right_mask = np.stack([np.roll(m, -(P - n)) for m, n in zip(left_mask, lens)])
  last_r, cont_r = shared_prefix_logits(model, jnp.asarray(right_tok), jnp.asarray(c_tok),
                                        **_split_inputs(right_tok, right_mask, c_tok, c_mask),
                                        last_prompt_index_N=jnp.asarray(lens - 1))
  np.testing.assert_allclose(last_r, last_l, rtol=1e-5, atol=1e-5)
  real = c_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(cont_r)[real], np.asarray(cont_l)[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(remat="block", attention="blocked"), dict(attention="dot_product"),
                                     dict(dtype="bfloat16")])
def test_remat_attention_choices_and_bf16_equal_the_full_forward(options):
  cfg = dataclasses.replace(CONFIGS["qwen"], **options)
  model = _model(cfg)
  # test_hidden_and_gradients_equal_the_full_forward[4-qwen]'s rows: with attention="dot_product" (which
  # the shared-prompt path does not read) the shared program is that test's, compiled once per run.
  N, G, P, C = 3, 4, 7, 5
  cont_lens = np.array([[5, 3, 0, 1], [2, 5, 4, 5], [1, 1, 5, 2]])
  p_tok, p_mask, c_tok, c_mask = _rows(N, G, P, C, [7, 3, 1], cont_lens)
  inputs = _split_inputs(p_tok, p_mask, c_tok, c_mask)
  tok, pos, mask = _full_rows(p_tok, p_mask, c_tok, c_mask)
  w_last, w_cont = _weights(N, G, C, 512)
  tol = dict(rtol=2e-4, atol=2e-5) if "dtype" not in options else dict(rtol=5e-2, atol=5e-2)
  v_full, g_full = _value_and_grad(_full_loss, model, tok, pos, mask, P, w_last, w_cont, c_mask)
  v_sh, g_sh = _value_and_grad(_shared_loss, model, p_tok, c_tok, inputs, w_last, w_cont, c_mask)
  np.testing.assert_allclose(v_sh, v_full, rtol=tol["rtol"])
  _assert_tree_close(g_sh, g_full, **tol)


def test_lora_adapter_gradients_equal_the_full_forward():
  model = _model(CONFIGS["llama"])
  lora.apply_lora(model, targets=lora.ALL_TARGETS, rank=4, alpha=8, rngs=nnx.Rngs(2))
  graphdef, adapters, frozen = lora.split_lora(model)
  adapters = jax.tree.map(lambda x: x + 0.05, adapters)  # B != 0 so the adapters change the output
  N, G, P, C = 2, 4, 5, 4
  p_tok, p_mask, c_tok, c_mask = _rows(N, G, P, C, [5, 3], np.full((N, G), 4), seed=11)
  inputs = _split_inputs(p_tok, p_mask, c_tok, c_mask)
  tok, pos, mask = _full_rows(p_tok, p_mask, c_tok, c_mask)
  w_last, w_cont = _weights(N, G, C, 512)

  def grads(loss, *args):
    f = lambda a: loss(nnx.merge(graphdef, a, frozen), *args)
    return jax.jit(jax.value_and_grad(f))(adapters)

  v_full, g_full = grads(_full_loss, tok, pos, mask, P, w_last, w_cont, c_mask)
  v_sh, g_sh = grads(_shared_loss, p_tok, c_tok, inputs, w_last, w_cont, c_mask)
  np.testing.assert_allclose(v_sh, v_full, rtol=1e-5)
  _assert_tree_close(g_sh, g_full, rtol=2e-4, atol=2e-5)


def test_bad_shapes_are_named():
  model = _model(CONFIGS["llama"])
  with pytest.raises(ValueError, match=r"continuations must be \[N=2"):
    shared_prefix.shared_prefix_hidden(model, jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 2, 2), jnp.int32),
                         prompt_positions_NP=jnp.zeros((2, 3), jnp.int32),
                         prompt_segment_ids_NP=jnp.ones((2, 3), jnp.int32),
                         cont_positions_NGC=jnp.zeros((3, 2, 2), jnp.int32),
                         cont_segment_ids_NGC=jnp.ones((3, 2, 2), jnp.int32))
