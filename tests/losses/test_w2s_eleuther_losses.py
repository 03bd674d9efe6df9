"""EleutherAI/w2s's extra W2S losses (`w2s/loss.py` at a929af0; branch `entropy` f674b2d) against worked
numbers and finite differences.

The worked batch is reference/formulas.md §11's: logits [[2,0],[0,1],[1,1],[−1,2]], weak labels
[[.8,.2],[.3,.7],[.6,.4],[.1,.9]]. Its softmax, with l(x) = log(1 + e^x):
  p = [[.880797,.119203], [.268941,.731059], [.5,.5], [.047426,.952574]]
  −log p = [[l(−2), l(2)], [l(1), l(−1)], [log 2, log 2], [l(3), l(−3)]]
         = [[.126928, 2.126928], [1.313262, .313262], [.693147, .693147], [3.048587, .048587]].
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.losses.w2s import (
  STEP_FRAC_LOSSES,
  W2S_LOSSES,
  confidence_penalty_loss,
  entropy_loss,
  kl_loss,
  midweak_radius,
  window_loss,
  xent_loss,
)
from w2s_jax.w2s.classify import classifier_objective

LOGITS = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)
LABELS = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]], np.float32)
# xent rows: .8·.126928 + .2·2.126928 = .526928; .3·1.313262 + .7·.313262 = .613262; log 2 = .693147;
# .1·3.048587 + .9·.048587 = .348587.
XENT_B = np.array([0.526928, 0.613262, 0.693147, 0.348587])
# H(p) rows: .880797·.126928 + .119203·2.126928 = .365334; .268941·1.313262 + .731059·.313262 = .582203;
# log 2 = .693147; .047426·3.048587 + .952574·.048587 = .190865.
ENTROPY_P_B = np.array([0.365334, 0.582203, 0.693147, 0.190865])


def _fd_grad(f, x, eps=1e-4):
  """Central finite differences of a float64 NumPy function of a [B, C] array."""
  x = np.asarray(x, np.float64)
  g = np.zeros_like(x)
  for i in np.ndindex(*x.shape):
    d = np.zeros_like(x)
    d[i] = eps
    g[i] = (f(x + d) - f(x - d)) / (2 * eps)
  return g


def _np_logp(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_window_loss_worked_example():
  # radius .15: window max p < .65 holds only for row 2 (max .5); rows 0, 1, 3 have max .881, .731, .953.
  loss, m = window_loss(LOGITS, LABELS, radius=0.15)
  np.testing.assert_array_equal(m["in_window_B"], [0, 0, 1, 0])
  np.testing.assert_allclose(loss, [0, 0, 0.693147, 0], atol=1e-6)
  # The reference's value sum(CE over the window) / B = .693147 / 4.
  assert float(jnp.mean(loss)) == pytest.approx(0.173287, abs=1e-6)
  assert float(m["frac_in_window"]) == pytest.approx(0.25)
  # radius .25: max p < .75 now also holds for row 1 (.731): (.613262 + .693147) / 4 = .326602.
  loss, _ = window_loss(LOGITS, LABELS, radius=0.25)
  assert float(jnp.mean(loss)) == pytest.approx(0.326602, abs=1e-6)


def test_window_loss_with_full_window_is_xent_and_masked_rows_have_no_gradient():
  """radius > .5 (the reference's .51 for ground-truth training) keeps every row: plain xent."""
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(8, 3)) * 3).astype(np.float32)
  labels = rng.dirichlet(np.ones(3), 8).astype(np.float32)
  np.testing.assert_allclose(window_loss(logits, labels, radius=0.51)[0], xent_loss(logits, labels)[0],
                             rtol=1e-6)
  g = np.asarray(jax.grad(lambda x: jnp.sum(window_loss(x, LABELS, radius=0.15)[0]))(jnp.asarray(LOGITS)))
  np.testing.assert_array_equal(g[[0, 1, 3]], 0.0)
  np.testing.assert_allclose(g[2], [0.5 - 0.6, 0.5 - 0.4], atol=1e-6)   # p − y on the kept row


def test_midweak_radius_is_median_confidence():
  # |y₁ − .5| = .3, .2, .1, .4 → median (.2 + .3) / 2 = .25.
  assert midweak_radius(LABELS) == pytest.approx(0.25)


def test_kl_loss_worked_example_and_zero_labels():
  # H(y) rows: H(.8,.2) = .500402, H(.3,.7) = .610864, H(.6,.4) = .673012, H(.1,.9) = .325083;
  # KL = xent − H(y) = .026526, .002398, .020135, .023504 (mean .018141).
  loss, _ = kl_loss(LOGITS, LABELS)
  np.testing.assert_allclose(loss, [0.026526, 0.002398, 0.020135, 0.023504], atol=2e-6)
  assert float(jnp.mean(loss)) == pytest.approx(0.018141, abs=1e-6)
  onehot = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)   # 0·log 0 = 0: KL equals xent, finite
  np.testing.assert_allclose(kl_loss(LOGITS[:2], onehot)[0], xent_loss(LOGITS[:2], onehot)[0], rtol=1e-6)
  assert float(kl_loss(np.array([[0.0, 0.0]]), np.array([[0.5, 0.5]]))[0][0]) == pytest.approx(0, abs=1e-7)
  g_kl = jax.grad(lambda x: jnp.sum(kl_loss(x, LABELS)[0]))(jnp.asarray(LOGITS))
  g_xe = jax.grad(lambda x: jnp.sum(xent_loss(x, LABELS)[0]))(jnp.asarray(LOGITS))
  np.testing.assert_allclose(g_kl, g_xe, atol=1e-6)


@pytest.mark.parametrize("step_frac,coef,mean", [(1.0, 0.5, 0.501684), (0.05, 0.25, 0.523583)])
def test_entropy_loss_worked_example(step_frac, coef, mean):
  # target = (1 − c)·y + c·p, so loss = (1 − c)·xent + c·H(p). Linear warmup over 10 %: step .05 → c = .25.
  # c = .5:  row 0 = .5·.526928 + .5·.365334 = .446131; mean (.446131 + .597732 + .693147 + .269726)/4.
  # c = .25: row 0 = .75·.526928 + .25·.365334 = .486529; mean .523583.
  loss, m = entropy_loss(LOGITS, LABELS, step_frac=step_frac)
  assert float(m["coef"]) == pytest.approx(coef)
  np.testing.assert_allclose(loss, (1 - coef) * XENT_B + coef * ENTROPY_P_B, atol=2e-6)
  np.testing.assert_allclose(m["entropy_B"], ENTROPY_P_B, atol=1e-6)
  assert float(jnp.mean(loss)) == pytest.approx(mean, abs=1e-6)


def test_entropy_loss_coef_zero_is_xent_and_reference_gradient_is_scaled_xent():
  """Coefficient 0 gives xent. With the reference's detached p the gradient is (1 − c)(p − y); with
  `stop_gradient=False` it is the finite-difference gradient of (1 − c)·xent + c·H(p)."""
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(6, 3)) * 2).astype(np.float32)
  labels = rng.dirichlet(np.ones(3), 6).astype(np.float32)
  np.testing.assert_allclose(entropy_loss(logits, labels, step_frac=0.7, aux_coef=0.0)[0],
                             xent_loss(logits, labels)[0], rtol=1e-6)
  c = 0.4
  kw = dict(step_frac=1.0, aux_coef=c, warmup_frac=0.0)
  g = jax.grad(lambda x: jnp.sum(entropy_loss(x, labels, **kw)[0]))(jnp.asarray(logits))
  p = jax.nn.softmax(logits)
  np.testing.assert_allclose(g, (1 - c) * (p - labels), atol=1e-6)

  def np_loss(x):
    lp = _np_logp(x)
    return np.sum(-(1 - c) * (labels * lp).sum(-1) - c * (np.exp(lp) * lp).sum(-1))

  g_live = jax.grad(lambda x: jnp.sum(entropy_loss(x, labels, stop_gradient=False, **kw)[0]))(
    jnp.asarray(logits))
  np.testing.assert_allclose(g_live, _fd_grad(np_loss, logits), atol=1e-5)
  assert not np.allclose(g_live, g, atol=1e-3)   # the live entropy term does change the gradient


def test_entropy_loss_balance_batch_matches_reference_formula():
  # y₁ = .2, .7, .4, .9 → log-odds −1.386294, .847298, −.405465, 2.197224 (mean .313191);
  # σ(log-odds − mean) = .154533, .630441, .327689, .868074 are the balanced labels. With c = 0 the loss is
  # their xent.
  loss, _ = entropy_loss(LOGITS, LABELS, step_frac=1.0, aux_coef=0.0, balance_batch=True)
  y1 = np.array([0.154533, 0.630441, 0.327689, 0.868074])
  lp = _np_logp(LOGITS.astype(np.float64))
  np.testing.assert_allclose(loss, -((1 - y1) * lp[:, 0] + y1 * lp[:, 1]), atol=2e-6)
  with pytest.raises(ValueError, match="binary"):
    entropy_loss(np.zeros((2, 3)), np.full((2, 3), 1 / 3), step_frac=1.0, balance_batch=True)


def test_confidence_penalty_worked_example_and_gradient():
  # xent − .75·H(p): row 0 = .526928 − .75·.365334 = .252928; rows .176609, .173287, .205439; mean .202066.
  loss, m = confidence_penalty_loss(LOGITS, LABELS)
  np.testing.assert_allclose(loss, XENT_B - 0.75 * ENTROPY_P_B, atol=2e-6)
  assert float(jnp.mean(loss)) == pytest.approx(0.202066, abs=1e-6)
  np.testing.assert_allclose(confidence_penalty_loss(LOGITS, LABELS, beta=0.0)[0],
                             xent_loss(LOGITS, LABELS)[0], rtol=1e-6)

  def np_loss(x):
    lp = _np_logp(x)
    return np.sum(-(LABELS * lp).sum(-1) + 0.75 * (np.exp(lp) * lp).sum(-1))

  g = jax.grad(lambda x: jnp.sum(confidence_penalty_loss(x, LABELS)[0]))(jnp.asarray(LOGITS))
  np.testing.assert_allclose(g, _fd_grad(np_loss, LOGITS), atol=1e-5)


def test_registry_names_and_step_frac_losses():
  assert {"entropy", "window", "kl", "confidence_penalty"} <= set(W2S_LOSSES)
  for name in STEP_FRAC_LOSSES:
    W2S_LOSSES[name](LOGITS, LABELS, step_frac=0.5)
  for name in set(W2S_LOSSES) - set(STEP_FRAC_LOSSES):
    loss, _ = jax.jit(lambda a, b, f=W2S_LOSSES[name]: f(a, b))(LOGITS, LABELS)
    assert loss.shape == (4,) and np.all(np.isfinite(loss))


@pytest.mark.parametrize("name,kwargs", [("entropy", {"aux_coef": 0.5, "warmup_frac": 0.5}),
                                         ("window", {"radius": 0.15}), ("kl", {}),
                                         ("confidence_penalty", {"beta": 0.75})])
def test_classifier_objective_resolves_the_new_losses(name, kwargs):
  """The sweep's objective finds each loss by name and passes step_frac to the step-dependent ones."""

  def model(tokens, segment_ids_BL):
    del segment_ids_BL
    return jnp.asarray(LOGITS)[tokens[:, 0]]

  batch = {"tokens": np.arange(4)[:, None], "segment_ids": np.ones((4, 1), np.int32), "targets_BC": LABELS,
           "hard_B": np.array([0, 1, 1, 1]), "step_frac_B": np.full(4, 0.25, np.float32)}
  total, weight, metrics = classifier_objective(name, **kwargs)(model, batch, None)
  step = {"step_frac": 0.25} if name in STEP_FRAC_LOSSES else {}
  expected, _ = W2S_LOSSES[name](LOGITS, LABELS, **kwargs, **step)
  assert float(total) == pytest.approx(float(jnp.sum(expected)), rel=1e-6) and float(weight) == 4.0
  assert float(metrics["accuracy"]) == 3.0   # argmax 0, 1, 0 (tie), 1 against 0, 1, 1, 1
