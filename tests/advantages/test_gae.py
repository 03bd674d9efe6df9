"""GAE and the token-level helpers (w2s_jax/advantages/gae.py) against a float64 port of verl's
`compute_gae_advantage_return` loop, and the λ = 1 / λ = 0 identities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.advantages import (
  discounted_returns,
  gae_advantages,
  last_token_mask,
  masked_whiten,
  outcome_token_rewards,
)

TOL = dict(atol=1e-6, rtol=1e-6)
N, L = 6, 9


@pytest.fixture(autouse=True)
def _no_rank_promotion():
  with jax.numpy_rank_promotion("raise"):
    yield


@functools.cache
def J(fn, **static):
  """Cached jit of fn with static keywords (eager dispatch compiles each primitive per shape: slow)."""
  return jax.jit(functools.partial(fn, **static))


GAE = jax.jit(gae_advantages, static_argnames="whiten")  # γ and λ are traced: one compile for all values


def np_gae(rewards, values, mask, gamma, lam, bootstrap=None):
  """verl's loop in float64: masked tokens pass the carry through; V after the last token = bootstrap or 0."""
  n, length = rewards.shape
  adv = np.zeros((n, length))
  for i in range(n):
    next_value = 0.0 if bootstrap is None else float(bootstrap[i])
    last = 0.0
    for t in reversed(range(length)):
      if not mask[i, t]:
        continue
      delta = rewards[i, t] + gamma * next_value - values[i, t]
      last = delta + gamma * lam * last
      adv[i, t] = last
      next_value = values[i, t]
  return adv, np.where(mask, adv + values, 0.0)


def _random(seed):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(N, L)).astype(np.float32)
  values = rng.normal(size=(N, L)).astype(np.float32)
  lengths = rng.integers(1, L + 1, N)
  mask = np.arange(L)[None, :] < lengths[:, None]  # right padding
  mask[1, 2:4] = False  # an interior gap (tool/observation tokens)
  mask[2] = False  # a fully masked row
  return rewards, values, mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.9, 0.8), (0.99, 0.0)])
def test_gae_matches_reference(gamma, lam):
  for seed in range(2):
    rewards, values, mask = _random(seed)
    adv, returns = GAE(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_returns = np_gae(rewards.astype(np.float64), values.astype(np.float64), mask, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, atol=2e-6, rtol=1e-6)
    np.testing.assert_allclose(returns, ref_returns, atol=2e-6, rtol=1e-6)


def test_gae_bootstrap_and_whiten():
  rewards, values, mask = _random(3)
  bootstrap = np.random.default_rng(3).normal(size=N).astype(np.float32)
  adv, returns = GAE(rewards, values, mask, gamma=0.9, lam=0.9, bootstrap_value_B=bootstrap, whiten=True)
  ref_adv, ref_returns = np_gae(rewards.astype(np.float64), values.astype(np.float64), mask, 0.9, 0.9,
                                bootstrap)
  np.testing.assert_allclose(returns, ref_returns, **TOL)
  v = ref_adv[mask]
  whitened = (ref_adv - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8)
  np.testing.assert_allclose(adv, np.where(mask, whitened, 0.0), **TOL)


def test_lambda_one_is_reward_to_go_minus_value():
  rewards, values, mask = _random(4)
  adv, returns = GAE(rewards, values, mask, gamma=1.0, lam=1.0)
  r = np.where(mask, rewards, 0.0).astype(np.float64)
  to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]
  np.testing.assert_allclose(adv, np.where(mask, to_go - values, 0.0), **TOL)
  np.testing.assert_allclose(returns, np.where(mask, to_go, 0.0), **TOL)
  np.testing.assert_allclose(J(discounted_returns)(rewards, mask), returns, **TOL)


def test_lambda_zero_is_td_error():
  rewards, values, mask = _random(5)
  mask[1] = True  # plain right padding here, so the next valid token is t + 1
  gamma = 0.9
  adv, _ = GAE(rewards, values, mask, gamma=gamma, lam=0.0)
  next_values = np.concatenate([values[:, 1:], np.zeros((N, 1))], axis=1) * np.concatenate(
    [mask[:, 1:], np.zeros((N, 1), bool)], axis=1)
  td = rewards + gamma * next_values - values
  np.testing.assert_allclose(adv, np.where(mask, td, 0.0), **TOL)


def test_padding_contents_do_not_matter():
  rewards, values, mask = _random(6)
  garbage_r = np.where(mask, rewards, 1e6).astype(np.float32)
  garbage_v = np.where(mask, values, -1e6).astype(np.float32)
  fn = functools.partial(GAE, gamma=0.95, lam=0.9)
  for a, b in zip(fn(rewards, values, mask), fn(garbage_r, garbage_v, mask)):
    np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(a)[~mask] == 0.0)


def test_outcome_token_rewards_and_last_token():
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]], np.float32)
  np.testing.assert_array_equal(J(last_token_mask)(mask), [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0],
                                                           [0, 0, 0, 1]])
  kl = np.full((4, 4), 0.5, np.float32)
  out = J(outcome_token_rewards, kl_coef=0.1)(np.array([1.0, 2.0, 3.0, 4.0], np.float32), mask, kl)
  expected = np.array([[-0.05, -0.05, 0.95, 0], [1.95, 0, 0, 0], [0, 0, 0, 0], [-0.05, -0.05, 0, 3.95]])
  np.testing.assert_allclose(out, expected, **TOL)


def test_masked_whiten_matches_numpy():
  rewards, _, mask = _random(7)
  v = rewards[mask].astype(np.float64)
  expected = np.where(mask, (rewards - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)
  np.testing.assert_allclose(J(masked_whiten)(rewards, mask), expected, **TOL)
  np.testing.assert_allclose(J(masked_whiten, shift_mean=False)(rewards, mask),
                             np.where(mask, expected + v.mean(), 0.0), **TOL)


def test_jit_equals_eager():
  rewards, values, mask = _random(8)
  eager = gae_advantages(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=0.9, lam=0.95)
  jitted = GAE(rewards, values, mask, gamma=0.9, lam=0.95)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_shapes_are_reported():
  with pytest.raises(ValueError, match="equal shapes"):
    gae_advantages(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="bootstrap_value_B"):
    gae_advantages(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), bootstrap_value_B=jnp.ones(3))
