"""Pure-JAX properties of `Transformer`, its heads and presets.

Parity with transformers is in test_transformer_hf.py.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import GEMMA_TINY
from w2s_jax.models import (
  PRESETS,
  SequenceClassifier,
  Transformer,
  ValueModel,
  attention_mask,
  count_params,
  get_preset,
)

L = 12


@nnx.jit
def _forward(model, tokens_BL, positions_BL=None, segment_ids_BL=None):
  """Any of the models (LM, classifier, value model), jitted: eager forwards compile op by op."""
  return model(tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL)


def _random_params(model, seed=1):
  """Perturbs every param (norm scales, zero-initialised biases) so that no term is invisible."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, new))
  return model


@functools.cache
def _model(name):
  cfg = PRESETS["tiny"] if name == "tiny" else GEMMA_TINY
  return _random_params(Transformer(cfg, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module", params=["tiny", "gemma_tiny"])
def model(request):
  return _model(request.param)


def _tokens(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 512, size=shape), jnp.int32)


def test_packing_equals_separate_sequences(model):
  """Row 0 packs a (5 tokens) and b (4); rows 1 and 2 hold a and b alone; row 3 is all padding."""
  tokens = np.array(_tokens((4, L)))
  a, b = tokens[0, :5], tokens[0, 5:9]
  tokens[1, :5], tokens[2, :4] = a, b
  seg = np.zeros((4, L), np.int32)
  seg[0, :5], seg[0, 5:9], seg[1, :5], seg[2, :4] = 1, 2, 1, 1
  pos = np.zeros((4, L), np.int32)
  pos[0, :5], pos[0, 5:9] = np.arange(5), np.arange(4)  # restart per segment
  pos[1, :5], pos[2, :4] = np.arange(5), np.arange(4)
  with jax.numpy_rank_promotion("raise"):
    logits = np.asarray(_forward(model, jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg)))
  assert logits.dtype == np.float32 and np.isfinite(logits).all()  # pad rows too
  np.testing.assert_allclose(logits[0, :5], logits[1, :5], atol=1e-5)
  np.testing.assert_allclose(logits[0, 5:9], logits[2, :4], atol=1e-5)


def test_default_positions_and_segments():
  model = _model("tiny")
  tokens = _tokens((4, L))
  pos = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None], (4, L))
  seg = jnp.ones((4, L), jnp.int32)
  np.testing.assert_allclose(_forward(model, tokens), _forward(model, tokens, pos, seg), atol=1e-6)


def test_attention_mask_against_loops():
  seg = np.array([[1, 1, 2, 2, 2, 0], [0, 0, 3, 3, 3, 3]])
  idx = np.broadcast_to(np.arange(6), (2, 6))
  got = np.asarray(attention_mask(seg, seg, idx, idx, sliding_window=2))
  want = np.zeros((2, 6, 6), bool)
  for b in range(2):
    for t in range(6):
      for s in range(6):
        real = seg[b, t] != 0 and seg[b, t] == seg[b, s] and 0 <= t - s < 2
        want[b, t, s] = real or (seg[b, t] == 0 and s == t)
  np.testing.assert_array_equal(got, want)


def test_bf16_compute_close_to_f32_and_params_stay_f32():
  f32 = _model("gemma_tiny")
  cfg16 = dataclasses.replace(GEMMA_TINY, dtype="bfloat16")
  bf16 = nnx.eval_shape(lambda: Transformer(cfg16, rngs=nnx.Rngs(0)))
  nnx.update(bf16, nnx.state(f32, nnx.Param))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  tokens = _tokens((4, L))
  ref, got = _forward(f32, tokens), _forward(bf16, tokens)
  assert got.dtype == jnp.float32
  err = float(jnp.max(jnp.abs(got - ref)))
  assert 0.0 < err < 0.05 * float(jnp.max(jnp.abs(ref))), err
  assert nnx.jit(lambda m, t: m.hidden(t))(bf16, tokens).dtype == jnp.bfloat16


def test_remat_gives_same_values_and_gradients():
  base = _model("tiny")
  remat = nnx.eval_shape(
    lambda: Transformer(dataclasses.replace(PRESETS["tiny"], remat=True), rngs=nnx.Rngs(0))
  )
  nnx.update(remat, nnx.state(base, nnx.Param))
  tokens = _tokens((2, 8))

  @nnx.jit
  def loss_and_grad(m):
    return nnx.value_and_grad(lambda m: jnp.mean(jax.nn.logsumexp(m(tokens), axis=-1)))(m)

  (l0, g0), (l1, g1) = loss_and_grad(base), loss_and_grad(remat)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_classifier_reads_last_real_token():
  cfg = PRESETS["tiny"]
  zero = SequenceClassifier(cfg, 3, rngs=nnx.Rngs(0))
  tokens = _tokens((2, L))
  seg = jnp.asarray([[1] * 7 + [0] * 5, [0] * 4 + [1] * 8], jnp.int32)
  np.testing.assert_array_equal(_forward(zero, tokens, None, seg), np.zeros((2, 3), np.float32))

  clf = SequenceClassifier(cfg, 3, zero_init=False, rngs=nnx.Rngs(0))
  pos = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0)
  run = lambda m, t: _forward(m, t, pos, seg)
  logits = run(clf, tokens)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  assert float(jnp.abs(logits).min()) > 0.0
  # Changing padding tokens changes nothing; changing the last real token does.
  pad_changed = jnp.where(seg == 0, (tokens + 1) % 512, tokens)
  np.testing.assert_allclose(run(clf, pad_changed), logits, atol=1e-6)
  last_changed = tokens.at[0, 6].set((tokens[0, 6] + 1) % 512).at[1, 11].add(1)
  assert not np.allclose(run(clf, last_changed)[0], logits[0], atol=1e-4)
  assert not np.allclose(run(clf, last_changed)[1], logits[1], atol=1e-4)
  # The right-padded row equals the same 7 tokens unpadded.
  np.testing.assert_allclose(_forward(clf, tokens[:1, :7]), logits[:1], atol=1e-5)


def test_value_model_shape():
  values = _forward(ValueModel(PRESETS["tiny"], zero_init=False, rngs=nnx.Rngs(0)), _tokens((2, 5)))
  assert values.shape == (2, 5) and values.dtype == jnp.float32


def _n_params(module):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_count_params_matches(name):
  cfg = PRESETS[name]
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  assert _n_params(abstract) == count_params(cfg)


@pytest.mark.parametrize(
  "overrides", [dict(tie_embeddings=False, qkv_bias=True), dict(qk_norm=True, post_norms=True)]
)
def test_count_params_variants(overrides):
  cfg = get_preset("tiny", **overrides)
  assert _n_params(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))) == count_params(cfg)


def test_known_param_counts():
  assert count_params(PRESETS["smollm2-135m"]) == 134_515_008  # SmolLM2-135M
  assert count_params(PRESETS["qwen2.5-0.5b"]) == 494_032_768  # Qwen2.5-0.5B
  assert 19e6 < count_params(PRESETS["ladder-4"]) < 21e6


def test_get_preset_errors_name_the_choices():
  with pytest.raises(ValueError, match="ladder-4"):
    get_preset("nope")
  with pytest.raises(ValueError, match="d_model"):
    get_preset("tiny", d_modle=3)
  assert get_preset("ladder-2", vocab_size=300).vocab_size == 300


def test_builds_and_runs_under_mesh_with_logical_rules():
  n = len(jax.devices())
  mesh = jax.make_mesh(
    (1, n, 1), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3
  )
  rules = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", None),
    ("head_dim", None),
  )
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    clf = SequenceClassifier(PRESETS["tiny"], 2, zero_init=False, rngs=nnx.Rngs(0))
    model = clf.backbone
    assert model.embedding_VD[...].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    k_DKH = model.blocks[0].attn.k_DKH
    assert k_DKH.get_metadata()["out_sharding"] == ("embed", "kv_heads", "head_dim")
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    k_spec = specs["blocks"][0]["attn"]["k_DKH"].get_value()
    assert k_spec == jax.sharding.PartitionSpec("fsdp", None, None)
    logits = nnx.jit(lambda m, t: m(t))(clf, _tokens((n, 8)))
  assert logits.shape == (n, 2) and bool(jnp.isfinite(logits).all())
