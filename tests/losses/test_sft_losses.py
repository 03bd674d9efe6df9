"""SFT loss and named reductions against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.losses import REDUCTIONS, aggregate, reduce, sft_loss


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_sft(logits, targets, mask, z, eps):
  logp = _np_log_softmax(logits.astype(np.float64))
  nb, nl, _ = logits.shape
  out = np.zeros((nb, nl))
  for i in range(nb):
    for t in range(nl):
      nll = -logp[i, t, targets[i, t]]
      smooth = -logp[i, t].mean()
      log_z = np.log(np.exp(logits[i, t].astype(np.float64)).sum())
      out[i, t] = ((1 - eps) * nll + eps * smooth + z * log_z**2) * mask[i, t]
  return out


@pytest.mark.parametrize("z,eps", [(0.0, 0.0), (1e-3, 0.0), (0.0, 0.1), (1e-4, 0.2)])
def test_sft_loss_matches_numpy(z, eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, size=(3, 5))
  mask = rng.integers(0, 2, size=(3, 5))
  loss, aux = jax.jit(lambda a, b, c: sft_loss(a, b, c, z_loss=z, label_smoothing=eps))(
    logits, targets, mask
  )
  np.testing.assert_allclose(loss, _np_sft(logits, targets, mask, z, eps), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux["nll_BL"], _np_sft(logits, targets, mask, 0.0, 0.0), rtol=1e-5, atol=1e-5)


def test_sft_loss_uniform_logits_is_log_vocab():
  loss, _ = sft_loss(jnp.zeros((2, 4, 7)), jnp.ones((2, 4), jnp.int32), jnp.ones((2, 4)))
  np.testing.assert_allclose(loss, np.full((2, 4), np.log(7)), rtol=1e-6)


def test_sft_loss_huge_logits_stay_finite():
  logits = jnp.array([[[1e4, -1e4, 0.0]]])
  loss, _ = sft_loss(logits, jnp.array([[1]]), jnp.ones((1, 1)))
  assert np.isfinite(loss).all() and float(loss[0, 0]) == pytest.approx(2e4, rel=1e-6)


def _np_reduce(x, m, mode):
  x, m = x.astype(np.float64), m.astype(np.float64)
  rows = [i for i in range(len(x)) if m[i].sum() > 0]
  if mode == "token-mean":
    return (x * m).sum() / m.sum()
  if mode == "seq-mean-token-mean":
    return np.mean([(x[i] * m[i]).sum() / m[i].sum() for i in rows])
  if mode == "seq-mean-token-sum":
    return np.mean([(x[i] * m[i]).sum() for i in rows])
  return np.mean([(x[i] * m[i]).sum() / x.shape[1] for i in rows])


@pytest.mark.parametrize("mode", REDUCTIONS)
def test_reductions_match_numpy(mode):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  m = rng.integers(0, 2, size=(4, 6))
  m[2] = 0  # an all-masked row counts for nothing
  np.testing.assert_allclose(reduce(x, m, mode), _np_reduce(x, m, mode), rtol=1e-6)


@pytest.mark.parametrize("mode", REDUCTIONS)
def test_reductions_add_across_splits(mode):
  """Numerators and denominators of two halves add up to the whole: what accumulation relies on."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(6, 5)).astype(np.float32)
  m = rng.integers(0, 2, size=(6, 5))
  n1, d1 = aggregate(x[:3], m[:3], mode)
  n2, d2 = aggregate(x[3:], m[3:], mode)
  np.testing.assert_allclose((n1 + n2) / (d1 + d2), reduce(x, m, mode), rtol=1e-6)


def test_empty_batch_reduces_to_zero():
  assert float(reduce(jnp.ones((2, 3)), jnp.zeros((2, 3)), "token-mean")) == 0.0


def test_unknown_reduction_names_the_choices():
  with pytest.raises(ValueError, match="token-mean"):
    aggregate(jnp.ones((1, 1)), jnp.ones((1, 1)), "mean")
