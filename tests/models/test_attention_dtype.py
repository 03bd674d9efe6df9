"""The accelerator-ready model options: `attention="dot_product"` and bf16 compute on f32 weights.

Each choice is compared with the default (`attention="einsum"`, float32) on the same parameters.
Tolerances: the two attentions compute the same float32 logits and softmax with a different
reduction order, so they agree to float32 rounding (~1e-6 relative per op; 1e-5 absolute on logits
of magnitude ~1 after 2-3 layers leaves a 10x margin). bf16 compute rounds every matmul input to 8
mantissa bits (relative error 2^-9 ~ 0.2 % each), so logits may move by a few percent of their
scale: the bound is 5 % of max |logit|, the same as the existing bf16 test in test_transformer.py.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import GEMMA_TINY
from w2s_jax.models import PRESETS, Transformer, from_section
from w2s_jax.sampling import Sampler, SamplingConfig


def _perturbed(cfg, seed=1):
  """A model of `cfg` with every parameter perturbed (no zero-initialised term stays invisible)."""
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                                 for x, k in zip(leaves, keys)]))
  return model


def _with(model, **changes):
  """The same parameters under a config with `changes`."""
  other = nnx.eval_shape(lambda: Transformer(dataclasses.replace(model.cfg, **changes), rngs=nnx.Rngs(0)))
  nnx.update(other, nnx.state(model, nnx.Param))
  return other


@nnx.jit
def _forward(model, tokens_BL, positions_BL, segment_ids_BL):
  return model(tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL)


def _packed_padded_batch():
  """Row 0: two packed segments; row 1: left padding then one segment; row 2: right padding."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(3, 512, size=(3, 10)), jnp.int32)
  seg = jnp.asarray([[1] * 6 + [2] * 4, [0] * 3 + [1] * 7, [1] * 8 + [0] * 2], jnp.int32)
  pos = jnp.asarray([list(range(6)) + list(range(4)), [0] * 3 + list(range(7)), list(range(10))], jnp.int32)
  return tokens, pos, seg


GQA_SLIDING = dataclasses.replace(PRESETS["tiny"], n_layers=3, sliding_window=3, sliding_window_pattern=2)


@pytest.mark.parametrize("cfg", [PRESETS["tiny"], GQA_SLIDING], ids=["tiny_gqa", "gqa_sliding_window"])
def test_dot_product_attention_matches_einsum_values_and_gradients(cfg):
  base = _perturbed(cfg)
  dpa = _with(base, attention="dot_product")
  tokens, pos, seg = _packed_padded_batch()
  real = np.asarray(seg) != 0
  ref, got = _forward(base, tokens, pos, seg), _forward(dpa, tokens, pos, seg)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], atol=1e-5, rtol=1e-5)

  @nnx.jit
  def grads(m):
    loss = lambda m: jnp.sum(jax.nn.logsumexp(m(tokens, positions_BL=pos, segment_ids_BL=seg), -1) * real)
    return nnx.grad(loss)(m)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), grads(base), grads(dpa))


def test_dot_product_greedy_decoding_matches_einsum():
  """Prefill goes through the chosen attention; greedy tokens and their log-probs must not change."""
  base = _perturbed(PRESETS["tiny"])
  prompts = np.random.default_rng(2).integers(3, 512, size=(2, 6)).astype(np.int32)
  mask = np.ones(prompts.shape, bool)
  mask[1, :2] = False  # left padding
  outs = []
  for m in (base, _with(base, attention="dot_product")):
    graphdef, params = nnx.split(m)
    out = Sampler(graphdef, SamplingConfig(max_new_tokens=8, temperature=0.0))(params, prompts, mask,
                                                                                jax.random.key(0))
    outs.append(out)
  np.testing.assert_array_equal(outs[0].completions_BN, outs[1].completions_BN)
  np.testing.assert_allclose(outs[0].logprobs_BS, outs[1].logprobs_BS, atol=1e-5)


def test_dot_product_refuses_softcap_and_unknown_names():
  with pytest.raises(ValueError, match="soft-capping"):
    Transformer(dataclasses.replace(GEMMA_TINY, attention="dot_product"), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="'einsum', 'dot_product'"):
    Transformer(dataclasses.replace(PRESETS["tiny"], attention="flash"), rngs=nnx.Rngs(0))


def test_bf16_train_step_keeps_f32_master_weights_and_follows_f32():
  """One AdamW step with bf16 compute: weights and optimizer state stay float32, the loss and the
  updated weights stay within bf16 rounding of the float32 step's."""
  base = _perturbed(PRESETS["tiny"])
  tokens, pos, seg = _packed_padded_batch()
  tx = optax.adamw(1e-3)
  results = []
  for m in (base, _with(base, dtype="bfloat16", attention="dot_product")):
    graphdef, params = nnx.split(m, nnx.Param)

    @jax.jit
    def step(params, graphdef=graphdef):  # AdamW's first step, from its initial state (one program)
      opt_state = tx.init(params)

      def loss_fn(p):
        logits = nnx.merge(graphdef, p)(tokens, positions_BL=pos, segment_ids_BL=seg)
        logp = jax.nn.log_softmax(logits[:, :-1], -1)
        nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
        return jnp.mean(nll)
      loss, g = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(g, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss, g

    new, opt_state, loss, g = step(params)
    floats = [x for x in jax.tree.leaves((new, opt_state, g)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == jnp.float32 for x in floats)  # (AdamW's step count is an int)
    results.append((float(loss), new))
  (l32, p32), (l16, p16) = results
  assert abs(l16 - l32) < 0.02 * abs(l32), (l16, l32)
  # AdamW moves each weight by ~lr in the gradient's sign; bf16 may flip signs of tiny gradients only.
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.mean(np.abs(np.asarray(a) - np.asarray(b)) > 1e-3),
                                       p32, p16))
  assert max(float(d) for d in diffs) < 0.05


def _section(**kw):
  return ml_collections.ConfigDict({"preset": "tiny", "vocab_size": 512, "overrides": {}, **kw})


def test_from_section_reads_dtype_and_attention_shortcuts():
  cfg = from_section(_section(dtype="bfloat16", attention="dot_product"))
  assert (cfg.dtype, cfg.param_dtype, cfg.attention) == ("bfloat16", "float32", "dot_product")
  assert from_section(_section()).attention == "einsum"
  with pytest.raises(ValueError, match=r"model.attention = 'flash'"):
    from_section(_section(attention="flash"))
  with pytest.raises(ValueError, match=r"model.dtype = 'float16'"):
    from_section(_section(dtype="float16"))
  with pytest.raises(ValueError, match="conflicts with model.overrides.dtype"):
    from_section(_section(dtype="bfloat16", overrides={"dtype": "float32"}))


def test_dot_product_logits_match_transformers():
  """Against the reference implementation itself: a random transformers Llama (GQA, padded rows)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from w2s_jax.models import _hf_mapping

  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False,
  )).eval()
  cfg = _hf_mapping.config_from_hf(hf.config.to_dict(), attention="dot_product")
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  _hf_mapping.load_hf_weights(model, {k: v.numpy() for k, v in hf.state_dict().items()})
  tokens = np.random.default_rng(3).integers(0, 128, size=(2, 9)).astype(np.int64)
  mask = np.ones((2, 9), np.int64)
  mask[1, :3] = 0  # left padding
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
             position_ids=torch.tensor(positions)).logits.numpy()
  ours = np.asarray(_forward(model, jnp.asarray(tokens, jnp.int32), jnp.asarray(positions, jnp.int32),
                             jnp.asarray(mask, jnp.int32)))
  np.testing.assert_allclose(ours[0], ref[0], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ours[1, 3:], ref[1, 3:], atol=1e-4, rtol=1e-4)
