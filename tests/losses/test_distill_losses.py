"""Distillation losses against NumPy ports of their formulas, plus their limits and bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.losses.distill import generalized_jsd_loss, reverse_kl_token_rewards


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_jsd(s_logits, t_logits, beta, temperature):
  ls, lt = _log_softmax(s_logits / temperature), _log_softmax(t_logits / temperature)
  ps, pt = np.exp(ls), np.exp(lt)
  m = beta * pt + (1 - beta) * ps
  kl = lambda p, lp, q: np.sum(p * (lp - np.log(q)), -1)
  return beta * kl(pt, lt, m) + (1 - beta) * kl(ps, ls, m)


@pytest.mark.parametrize("beta,temperature", [(0.5, 1.0), (0.1, 1.0), (0.9, 2.0)])
def test_generalized_jsd_matches_numpy(beta, temperature):
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 3, 7)) * 3, rng.normal(size=(2, 3, 7)) * 3
  mask = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
  loss, _ = generalized_jsd_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), beta=beta,
                                 temperature=temperature)
  np.testing.assert_allclose(np.asarray(loss), _np_jsd(s, t, beta, temperature) * mask, atol=1e-6)


def test_jsd_limits_are_the_two_kls_and_bounded_between():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(4, 5, 11)) * 4, rng.normal(size=(4, 5, 11)) * 4
  mask = np.ones((4, 5), np.float32)
  ls, lt = _log_softmax(s), _log_softmax(t)
  fwd = np.sum(np.exp(lt) * (lt - ls), -1)
  rev = np.sum(np.exp(ls) * (ls - lt), -1)
  l0, _ = generalized_jsd_loss(s, t, mask, beta=0.0)
  l1, _ = generalized_jsd_loss(s, t, mask, beta=1.0)
  np.testing.assert_allclose(np.asarray(l0), fwd, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(l1), rev, rtol=1e-5, atol=1e-6)
  for beta in (0.2, 0.5, 0.8):
    lb, _ = generalized_jsd_loss(s, t, mask, beta=beta)
    h = -beta * np.log(beta) - (1 - beta) * np.log(1 - beta)
    assert np.all(np.asarray(lb) >= -1e-7) and np.all(np.asarray(lb) <= h + 1e-6)
  same, _ = generalized_jsd_loss(s, s, mask, beta=0.5)
  np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    generalized_jsd_loss(s, t, mask, beta=1.5)


def test_jsd_gradient_reaches_only_the_student():
  rng = np.random.default_rng(2)
  s, t = jnp.asarray(rng.normal(size=(1, 2, 5))), jnp.asarray(rng.normal(size=(1, 2, 5)))
  f = lambda s, t: jnp.sum(generalized_jsd_loss(s, t, jnp.ones((1, 2)), beta=0.5)[0])
  gs, gt = jax.jit(jax.grad(f, argnums=(0, 1)))(s, t)  # one program (op by op: ~30 compiles)
  assert np.abs(np.asarray(gs)).sum() > 0 and np.abs(np.asarray(gt)).sum() == 0


def test_reverse_kl_token_rewards_estimate_the_reverse_kl():
  # Samples drawn from the student: the mean of -r over many draws approaches KL(S‖T) per position.
  rng = np.random.default_rng(3)
  ls, lt = _log_softmax(rng.normal(size=6) * 2), _log_softmax(rng.normal(size=6) * 2)
  ys = rng.choice(6, size=200_000, p=np.exp(ls))
  r = reverse_kl_token_rewards(jnp.asarray(ls[ys])[None], jnp.asarray(lt[ys])[None], jnp.ones((1, len(ys))))
  kl = np.sum(np.exp(ls) * (ls - lt))
  assert abs(-float(np.mean(np.asarray(r))) - kl) < 0.02 * max(kl, 1.0)
  masked = reverse_kl_token_rewards(jnp.ones((1, 3)), jnp.zeros((1, 3)), jnp.array([[1, 0, 1]]))
  np.testing.assert_array_equal(np.asarray(masked), [[-1.0, 0.0, -1.0]])
