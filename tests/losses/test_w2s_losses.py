"""Weak-to-strong losses against the worked numbers of openai/weak-to-strong and EleutherAI/w2s
(reference/formulas.md §11) and against a NumPy port of the originals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.losses.w2s import logconf_coef, logconf_loss, product_loss, xent_loss

LOGITS = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)
LABELS = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]], np.float32)


def _np_logconf(logits, labels, step_frac, aux=0.5, warm=0.1):
  """NumPy port of openai/weak-to-strong's logconf_loss_fn (reference warmup)."""
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  coef = aux * (step_frac if step_frac <= warm else 1.0)
  thr = np.quantile(p[:, 0], labels[:, 1].mean())
  hard = np.stack([p[:, 0] >= thr, p[:, 0] < thr], 1).astype(np.float64)
  target = labels * (1 - coef) + hard * coef
  return -(target * np.log(p)).sum(1)


def test_xent_worked_example():
  loss, _ = xent_loss(LOGITS, LABELS)
  assert float(jnp.mean(loss)) == pytest.approx(0.545481, abs=1e-6)


def test_product_worked_example():
  loss, m = product_loss(LOGITS, LABELS)
  np.testing.assert_allclose(
    m["target_BC"], [[0.967273, 0.032727], [0.13619, 0.86381], [0.6, 0.4], [0.005501, 0.994499]], atol=1e-6
  )
  assert float(jnp.mean(loss)) == pytest.approx(0.350018, abs=1e-6)


@pytest.mark.parametrize("step_frac,coef,loss", [(0.05, 0.025, 0.539231), (0.1, 0.05, 0.532981),
                                                 (0.1001, 0.5, 0.420481)])
def test_logconf_reference_warmup_worked_example(step_frac, coef, loss):
  out, m = jax.jit(lambda a, b: logconf_loss(a, b, step_frac=step_frac))(LOGITS, LABELS)
  assert float(m["coef"]) == pytest.approx(coef, abs=1e-7)
  assert float(m["threshold"]) == pytest.approx(0.419129, abs=1e-6)
  np.testing.assert_array_equal(m["hard_BC"][:, 1], [0, 1, 0, 1])
  assert float(jnp.mean(out)) == pytest.approx(loss, abs=1e-6)


def test_logconf_matches_numpy_port_on_random_batches():
  rng = np.random.default_rng(0)
  for _ in range(5):
    logits = rng.normal(size=(9, 2)).astype(np.float32) * 2
    p1 = rng.uniform(size=9)
    labels = np.stack([1 - p1, p1], 1).astype(np.float32)
    frac = float(rng.uniform())
    out, _ = logconf_loss(logits, labels, step_frac=frac)
    np.testing.assert_allclose(out, _np_logconf(logits, labels, frac), rtol=1e-5, atol=1e-6)


def test_linear_warmup_is_continuous_and_reference_jumps():
  lin = [float(logconf_coef(f, aux_coef=0.5, warmup_frac=0.1, warmup="linear")) for f in (0.05, 0.1, 0.1001)]
  ref = [float(logconf_coef(f, aux_coef=0.5, warmup_frac=0.1, warmup="reference")) for f in (0.1, 0.1001)]
  assert lin == pytest.approx([0.25, 0.5, 0.5])
  assert ref == pytest.approx([0.05, 0.5])
  with pytest.raises(ValueError, match="linear"):
    logconf_coef(0.5, aux_coef=0.5, warmup_frac=0.1, warmup="cosine")


def test_logconf_rolling_buffer_matches_eleuther_example():
  buffer = jnp.full((6,), jnp.nan)
  lab1 = np.array([0.2, 0.7, 0.4, 0.9], np.float32)
  out, m = logconf_loss(LOGITS, np.stack([1 - lab1, lab1], 1), step_frac=0.5, warmup_frac=1.0,
                        warmup="linear", buffer_K=buffer)
  assert float(m["coef"]) == pytest.approx(0.25)
  assert float(m["threshold"]) == pytest.approx(0.419129, abs=1e-6)
  assert float(jnp.mean(out)) == pytest.approx(0.482981, abs=1e-6)
  logits2 = np.array([[0.5, 0.0], [0.0, 0.5], [3.0, 0.0], [0.0, 3.0]], np.float32)
  lab2 = np.array([0.3, 0.6, 0.1, 0.8], np.float32)
  out2, m2 = logconf_loss(logits2, np.stack([1 - lab2, lab2], 1), step_frac=1.5, warmup_frac=1.0,
                          warmup="linear", buffer_K=m["buffer_K"])
  np.testing.assert_allclose(m2["buffer_K"], [0.5, 0.047426, 0.622459, 0.377541, 0.952574, 0.047426],
                             atol=1e-6)
  assert float(m2["threshold"]) == pytest.approx(0.408156, abs=1e-6)
  assert float(jnp.mean(out2)) == pytest.approx(0.417582, abs=1e-6)


def test_losses_equal_xent_when_aux_is_off_and_labels_are_confident():
  """Properties: logconf with coef 0 is xent; product with β = 0 on one-hot labels is xent."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(7, 2)).astype(np.float32)
  p1 = rng.uniform(size=7)
  labels = np.stack([1 - p1, p1], 1).astype(np.float32)
  np.testing.assert_allclose(logconf_loss(logits, labels, step_frac=0.0)[0], xent_loss(logits, labels)[0],
                             rtol=1e-6)
  onehot = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 7)]
  np.testing.assert_allclose(product_loss(logits, onehot, beta=0.0)[0], xent_loss(logits, onehot)[0],
                             rtol=1e-6)


def test_targets_carry_no_gradient():
  """The gradient of each loss is (softmax − target): the target is a constant."""
  g = jax.grad(lambda x: jnp.sum(product_loss(x, LABELS)[0]))(jnp.asarray(LOGITS))
  _, m = product_loss(LOGITS, LABELS)
  np.testing.assert_allclose(g, jax.nn.softmax(LOGITS) - m["target_BC"], atol=1e-6)
