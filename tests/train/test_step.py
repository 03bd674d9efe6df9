"""The one train step: gradient accumulation, the non-finite guard and the shard_map form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.data import pipeline, text
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import step as step_lib
from w2s_jax.train.objectives import sft_objective
from w2s_jax.train.state import create_train_state


@pytest.fixture(scope="module")
def setup():
  # One block (n_layers=1): every step below still runs a whole transformer block, at half the compile.
  model = Transformer(get_preset("tiny", max_seq_len=64, n_layers=1), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  pairs = text.python_reference_examples("train", max_chars=100)[:64]
  data = pipeline.token_data(pairs, pairs[:8], ByteTokenizer(), seq_len=48, batch_size=8, eval_batches=1,
                             seed=0)
  return graphdef, params, data.train[0]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("reduction", ["token-mean", "seq-mean-token-mean"])
def test_grad_accumulation_equals_full_batch(setup, reduction):
  graphdef, params, batch = setup
  tx = optax.sgd(1.0)  # the update is the gradient itself
  objective = sft_objective(reduction=reduction)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  full = jax.jit(step_lib.make_train_step(objective, tx, graphdef))
  acc = jax.jit(step_lib.make_train_step(objective, tx, graphdef, grad_accum_steps=4))
  s_full, m_full = full(create_train_state(params, tx, 0), batch)
  s_acc, m_acc = acc(create_train_state(params, tx, 0), batch)
  np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
  for a, b in zip(_leaves(s_acc.params), _leaves(s_full.params), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # and the update really moved the parameters
  assert max(np.abs(a - b).max() for a, b in zip(_leaves(s_full.params), _leaves(params))) > 1e-4


def test_nonfinite_update_is_skipped_and_counted(setup):
  graphdef, params, _ = setup
  tx = optax.adam(1e-2)
  w_init = np.asarray(jax.tree.leaves(params)[0])

  def objective(model, batch, rng):
    del rng
    loss = jnp.sum(jax.tree.leaves(nnx.state(model, nnx.Param))[0]) * batch["scale"][0]
    return loss, jnp.ones(()), {}

  step = jax.jit(step_lib.make_train_step(objective, tx, graphdef))
  state = create_train_state(params, tx, 0)
  bad = {"scale": jnp.array([jnp.nan])}
  good = {"scale": jnp.array([1.0])}
  state, m = step(state, bad)
  assert int(state.nonfinite_streak) == 1 and int(m["nonfinite_streak"]) == 1
  np.testing.assert_array_equal(np.asarray(jax.tree.leaves(state.params)[0]), w_init)
  for a, b in zip(_leaves(state.opt_state), _leaves(tx.init(params)), strict=True):
    np.testing.assert_array_equal(a, b)
  state, _ = step(state, bad)
  assert int(state.nonfinite_streak) == 2 and int(state.step) == 2
  state, _ = step(state, good)
  assert int(state.nonfinite_streak) == 0 and int(state.nonfinite_total) == 2
  assert not np.array_equal(np.asarray(jax.tree.leaves(state.params)[0]), w_init)


def test_shard_map_step_matches_jit_step(setup):
  graphdef, params, batch = setup
  mesh = shd.make_mesh({"data": -1})
  # SGD: Adam's first update is ~lr·sign(g), which turns round-off in near-zero gradients into lr-sized
  # differences; with SGD the parameters compare the gradients themselves.
  tx = optax.sgd(0.5, momentum=0.9)
  objective = sft_objective()
  with jax.set_mesh(mesh):
    state0 = create_train_state(params, tx, 0)
    sh = shd.tree_shardings(jax.eval_shape(lambda: state0), mesh, shd.get_rules("dp"))
    jit_step = step_lib.jit_train_step(step_lib.make_train_step(objective, tx, graphdef), sh, mesh,
                                       donate=False)
    sm_step = step_lib.jit_train_step(
      step_lib.make_shard_map_train_step(objective, tx, graphdef, mesh, grad_accum_steps=1), sh, mesh,
      donate=False,
    )
    placed = shd.put_batch(batch, mesh)
    a, ma = jit_step(jax.device_put(state0, sh), placed)
    b, mb = sm_step(jax.device_put(state0, sh), placed)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
  for x, y in zip(_leaves(a.params), _leaves(b.params), strict=True):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_split_micro_rejects_uneven_batches():
  with pytest.raises(ValueError, match="micro-batches"):
    step_lib._split_micro({"x": jnp.zeros((6, 2))}, 4)
