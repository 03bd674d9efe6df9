"""The PRM loss against NumPy BCE, and the PRM objective training a tiny value model on step labels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from w2s_jax.losses.prm import prm_loss
from w2s_jax.models.heads import ValueModel
from w2s_jax.models.presets import get_preset
from w2s_jax.train.objectives import OBJECTIVES
from w2s_jax.train.state import create_train_state
from w2s_jax.train.step import make_train_step


def test_prm_loss_matches_numpy_bce_with_soft_labels_and_huge_logits():
  z = np.array([[2.0, -1.0, 0.5, 300.0], [-300.0, 0.0, 1.5, -2.0]], np.float32)
  y = np.array([[1.0, 0.0, 0.25, 0.0], [1.0, 0.5, 1.0, 0.0]], np.float32)
  m = np.array([[1, 1, 0, 1], [1, 1, 1, 0]], np.float32)
  loss, aux = prm_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(m))
  zz = z.astype(np.float64)
  bce = np.logaddexp(0, zz) - y * zz  # = -[y log σ(z) + (1-y) log(1-σ(z))]
  np.testing.assert_allclose(np.asarray(loss), bce * m, rtol=1e-6)
  assert np.isfinite(np.asarray(loss)).all()
  # z = 0 against y = 0.5 counts as correct: both are "not above ½".
  np.testing.assert_array_equal(np.asarray(aux["correct_BL"]), [[1, 1, 0, 0], [0, 1, 1, 0]])
  # Property: for a soft label y the minimising logit is logit(y).
  y0 = 0.3
  g = jax.grad(lambda z: prm_loss(z[None], jnp.full((1, 1), y0), jnp.ones((1, 1)))[0].sum())
  assert abs(float(g(jnp.array([np.log(y0 / (1 - y0))]))[0])) < 1e-6


def test_prm_objective_learns_step_labels():
  # Steps end with token 5 or 6; the label is 1 exactly when the step's first token is 7.
  rng = np.random.default_rng(0)
  tokens = rng.integers(8, 30, size=(16, 12)).astype(np.int32)
  end = np.zeros((16, 12), np.float32)
  labels = np.zeros((16, 12), np.float32)
  for b in range(16):
    for start in (0, 4, 8):
      good = rng.random() < 0.5
      tokens[b, start] = 7 if good else 9
      tokens[b, start + 3] = 5 + b % 2
      end[b, start + 3] = 1.0
      labels[b, start + 3] = float(good)
  batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens), "step_labels": labels,
           "step_end_mask": end}
  cfg = get_preset("tiny", vocab_size=32)
  model = ValueModel(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  objective = OBJECTIVES["prm"]()
  loss_sum, weight, _ = objective(model, batch, jax.random.key(0))
  z = np.asarray(model(tokens, segment_ids_BL=np.ones_like(tokens)), np.float64)
  want = np.sum((np.logaddexp(0, z) - labels * z) * end) / end.sum()
  np.testing.assert_allclose(float(loss_sum / weight), want, rtol=1e-5)
  tx = optax.adam(3e-3)
  step = jax.jit(make_train_step(objective, tx, graphdef))
  state = create_train_state(params, tx, 0)
  for _ in range(60):
    state, metrics = step(state, batch)
  assert float(metrics["step_accuracy"]) == 1.0 and float(metrics["loss"]) < 0.2
