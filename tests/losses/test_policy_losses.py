"""Policy losses, KL penalties and reward shaping (w2s_jax/losses/policy.py) against float64 NumPy
references (values *and* gradients), the worked numbers of reference/formulas.md §7–§9, and properties."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.advantages import grpo_advantages
from w2s_jax.losses.aggregation import reduce
from w2s_jax.losses.policy import (
  POLICY_LOSSES,
  dynamic_sampling_mask,
  kl_penalty,
  overlong_penalty,
  policy_loss,
  unlikeliness_rewards,
)

TOL = dict(atol=1e-6, rtol=1e-6)
B, L = 6, 8


@pytest.fixture(autouse=True)
def _no_rank_promotion():
  with jax.numpy_rank_promotion("raise"):
    yield


@functools.cache
def LG(**kw):
  """Jitted (loss_BL, metrics, d Σloss / d logp) of policy_loss with static keywords, cached."""

  def f(logp, old, adv, mask, positive_B=None):
    fn = lambda lp: policy_loss(lp, old, adv, mask, positive_B=positive_B, **kw)
    loss, metrics = fn(logp)
    return loss, metrics, jax.grad(lambda lp: jnp.sum(fn(lp)[0]))(logp)

  return jax.jit(f)


@functools.cache
def J(fn, **static):
  return jax.jit(functools.partial(fn, **static))


@jax.jit
def KL(logp, ref, mask):
  """Every kl_penalty kind and alias, and k3 with verl's clamps, in one compiled program."""
  kinds = ("k1", "k2", "k3", "kl", "mse", "low_var_kl")
  out = {kind: kl_penalty(logp, ref, kind, mask_BL=mask) for kind in kinds}
  out["k3-clamp"] = kl_penalty(logp, ref, "k3", mask_BL=mask, clamp=True)
  return out


# ---------------------------------------------------------------- float64 reference (loops)


def np_policy(kind, logp, old, adv, mask, eps_l, eps_h, dual=None, positive=None, level="sequence",
              is_ratio=False, pos_w=1.0, neg_w=1.0):
  """Returns (loss, d Σloss / d logp) token by token, from each paper's formula."""
  loss, grad = np.zeros(logp.shape), np.zeros(logp.shape)
  for b in range(logp.shape[0]):
    valid = [t for t in range(logp.shape[1]) if mask[b, t]]
    log_rho = {t: min(max(logp[b, t] - old[b, t], -20.0), 20.0) for t in valid}
    seq_mean = sum(log_rho.values()) / max(len(valid), 1)
    seq_sum = sum(log_rho.values())
    for t in valid:
      a, rho = adv[b, t], math.exp(log_rho[t])
      pos = bool(positive[b]) if positive is not None else a > 0
      if kind in ("ppo", "dapo", "gspo"):
        r = math.exp(min(seq_mean, 10.0)) if kind == "gspo" else rho
        unclipped, clipped = -a * r, -a * min(max(r, 1 - eps_l), 1 + eps_h)
        value, g = (clipped, 0.0) if clipped > unclipped else (unclipped, -a * r)
        if dual is not None and a < 0 and -a * dual < value:
          value, g = -a * dual, 0.0
      else:
        if kind == "cispo":
          w = min(max(rho, 1 - eps_l), 1 + eps_h)
        elif kind == "topr":
          neg = min(math.exp(seq_sum), 1.0) if level == "sequence" else min(rho, 1.0)
          w = 1.0 if pos else neg
        else:
          w = rho if is_ratio else 1.0
        value, g = -w * a * logp[b, t], -w * a
      scale = pos_w if pos else neg_w
      loss[b, t], grad[b, t] = value * scale, g * scale
  return loss, grad


def _random(seed, spread=0.3):
  rng = np.random.default_rng(seed)
  old = (-rng.random((B, L)) * 3).astype(np.float32)
  logp = (old + rng.normal(size=(B, L)) * spread).astype(np.float32)
  adv = np.repeat(rng.normal(size=(B, 1)), L, axis=1).astype(np.float32)
  adv[0] = rng.normal(size=L)  # token-level advantages too
  lengths = rng.integers(1, L + 1, B)
  mask = np.arange(L)[None, :] < lengths[:, None]
  mask[1] = False  # a fully masked row
  return logp, old, adv, mask


POSITIVE_B = np.array([True, False, True, False, False, True])

# name: (kind, policy_loss keywords, reference (ε_l, ε_h), reference keywords)
CASES = {
  "ppo": ("ppo", dict(), (0.2, 0.2), {}),
  "ppo-dual": ("ppo", dict(clip_eps=0.1, dual_clip_c=3.0), (0.1, 0.1), dict(dual=3.0)),
  "dapo": ("dapo", dict(), (0.2, 0.28), {}),
  "clip_higher-dual": ("clip_higher", dict(clip_eps_high=0.3, dual_clip_c=2.0), (0.2, 0.3), dict(dual=2.0)),
  "gspo": ("gspo", dict(), (3e-4, 4e-4), {}),
  "gspo-wide": ("gspo", dict(clip_eps=0.02, clip_eps_high=0.03), (0.02, 0.03), {}),
  "gspo-sym": ("gspo", dict(clip_eps=0.2, clip_eps_high=0.2), (0.2, 0.2), {}),
  "cispo": ("cispo", dict(), (1.0, 4.0), {}),
  "cispo-verl": ("cispo", dict(clip_eps=0.2, clip_eps_high=0.28), (0.2, 0.28), {}),
  "topr": ("topr", dict(), (0, 0), {}),
  "topr-token": ("topr", dict(topr_level="token"), (0, 0), dict(level="token")),
  "topr-flags": ("topr", dict(negative_weight=0.5), (0, 0), dict(positive=True, neg_w=0.5)),
  "reinforce": ("reinforce", dict(), (0, 0), {}),
  "reinforce-is-w": ("reinforce", dict(use_is_ratio=True, positive_weight=0.1), (0, 0),
                     dict(is_ratio=True, pos_w=0.1)),
  "reinforce-nsr": ("reinforce", dict(positive_weight=0.0), (0, 0), dict(pos_w=0.0)),
  "reinforce-psr": ("reinforce", dict(negative_weight=0.0), (0, 0), dict(neg_w=0.0)),
}


@functools.cache
def _all_cases():
  def f(logp, old, adv, mask, positive_B):
    out = {}
    for name, (kind, kw, _, ref_kw) in CASES.items():
      pos = positive_B if ref_kw.get("positive") else None
      fn = lambda lp, kind=kind, kw=kw, pos=pos: policy_loss(lp, old, adv, mask, kind=kind, positive_B=pos,
                                                             **kw)
      loss, metrics = fn(logp)
      out[name] = (loss, metrics, jax.grad(lambda lp, fn=fn: jnp.sum(fn(lp)[0]))(logp))
    return out

  return jax.jit(f)


def ALL(logp, old, adv, mask):
  """{case name: (loss_BL, metrics, grad_BL)} for every case of CASES, in one compiled program."""
  return _all_cases()(logp, old, adv, mask, POSITIVE_B)


def test_policy_loss_matches_reference():
  for seed in range(2):
    logp, old, adv, mask = _random(seed)
    out = ALL(logp, old, adv, mask)
    f64 = [x.astype(np.float64) for x in (logp, old, adv)]
    for name, (kind, _, eps, ref_kw) in CASES.items():
      ref_kw = dict(ref_kw, positive=POSITIVE_B if ref_kw.get("positive") else None)
      ref_kind = "dapo" if kind == "clip_higher" else kind
      ref_loss, ref_grad = np_policy(ref_kind, *f64, mask, *eps, **ref_kw)
      loss, metrics, grad = out[name]
      np.testing.assert_allclose(loss, ref_loss, err_msg=name, **TOL)
      np.testing.assert_allclose(grad, ref_grad, err_msg=name, **TOL)
      assert all(np.isfinite(float(v)) for v in metrics.values()), name


# ---------------------------------------------------------------- worked numbers (formulas.md)


def test_dapo_clip_and_dual_clip_examples():
  logp = np.log(np.array([[1.5], [0.5], [1.5], [5.0]], np.float32))
  adv = np.array([[1.0], [-1.0], [-1.0], [-1.0]], np.float32)
  loss, metrics, _ = LG(kind="dapo", dual_clip_c=3.0)(logp, np.zeros_like(logp), adv, np.ones_like(logp))
  np.testing.assert_allclose(loss[:, 0], [-1.28, 0.8, 1.5, 3.0], atol=1e-6)
  assert float(metrics["dual_clipfrac"]) == 0.25


def test_gspo_example():
  old = np.zeros((2, 3), np.float32)
  logp = np.array([[0.1, -0.2, 0.05]] * 2, np.float32)
  adv = np.array([[1.0] * 3, [-1.0] * 3], np.float32)
  loss, metrics, _ = LG(kind="gspo")(logp, old, adv, np.ones((2, 3)))
  np.testing.assert_allclose(loss[0], -0.983471, atol=1e-6)  # A > 0 and s < 1: the unclipped term
  np.testing.assert_allclose(loss[1], 0.9997, atol=1e-6)  # A < 0: clip(s, 1 − 3e-4, 1 + 4e-4) = 0.9997
  np.testing.assert_allclose(metrics["ratio_mean"], 0.983471, atol=1e-6)


def test_cispo_example():
  old = np.array([[-3.0]], np.float32)
  logp = old + np.float32(np.log(7.0))
  one = np.ones((1, 1), np.float32)
  _, _, grad = LG(kind="cispo")(logp, old, one, one)
  np.testing.assert_allclose(grad, [[-5.0]], atol=1e-6)  # TRL: weight min(ρ, 5)
  _, _, grad = LG(kind="cispo", clip_eps=0.2, clip_eps_high=0.28)(logp, old, one, one)
  np.testing.assert_allclose(grad, [[-1.28]], atol=1e-6)  # verl (0.2, 0.28)


def test_topr_example():
  logp = np.array([[-2.0], [-3.0], [-2.0]], np.float32)
  old = np.full((3, 1), -2.5, np.float32)
  adv = np.array([[1.0], [-1.0], [-1.0]], np.float32)
  loss, metrics, _ = LG(kind="topr")(logp, old, adv, np.ones((3, 1)))
  np.testing.assert_allclose(loss[:, 0], [2.0, -1.819592, -2.0], atol=1e-6)
  mean = J(reduce, mode="seq-mean-token-sum")(loss, np.ones((3, 1)))
  np.testing.assert_allclose(mean, -0.606531, atol=1e-6)
  assert float(metrics["clipfrac"]) == pytest.approx(1 / 3)
  p, c = 0.25, 0.5  # the baseline's effective positive fraction p̃ = p(1−c) / (1 + (1−2p)c)
  assert p * (1 - c) / (1 + (1 - 2 * p) * c) == pytest.approx(0.1)


def test_kl_example_and_aliases():
  out = KL(np.array([[-1.0, 0.0]], np.float32), np.array([[-1.5, 30.0]], np.float32), np.ones((1, 2)))
  for kind, alias, value in (("k1", "kl", 0.5), ("k2", "mse", 0.125), ("k3", "low_var_kl", 0.106531)):
    np.testing.assert_allclose(out[kind][0][0, 0], value, atol=1e-6)
    np.testing.assert_allclose(out[alias][0], out[kind][0])
  np.testing.assert_allclose(out["k3-clamp"][0][0], [0.106531, 10.0], atol=1e-6)  # verl: log r ≤ 20, k3 ≤ 10
  assert float(out["k3"][0][0, 1]) > 1e12


def test_shaping_examples():
  np.testing.assert_allclose(J(overlong_penalty, max_len=20480, buffer_len=4096)(
    np.array([16000, 16384, 18000, 20480, 30000])), [0.0, 0.0, -0.394531, -1.0, -1.0], atol=1e-6)
  shaped = J(overlong_penalty, max_len=10, buffer_len=4, penalty=0.5)(np.array([6, 7, 8, 12]))
  np.testing.assert_allclose(shaped, [0.0, -0.125, -0.25, -0.5], atol=1e-7)
  rewards = np.array([[1.0, 1, 0, 1]], np.float32)
  shaped = J(unlikeliness_rewards)(rewards, np.array([[-0.2, -0.9, -0.5, -0.4]], np.float32))
  np.testing.assert_allclose(shaped, [[0.8125, 1.0, 0.0, 0.875]], atol=1e-7)
  expected = [[0.309304, 0.721709, -1.477785, 0.446772]]
  np.testing.assert_allclose(J(grpo_advantages)(shaped), expected, atol=1e-6)


def test_unlikeliness_ties_and_mask():
  rewards = np.ones((2, 4), np.float32)
  logps = np.array([[-1.0, -1.0, -2.0, -1.0], [-3.0, -1.0, -2.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
  shaped = J(unlikeliness_rewards, rank_penalty=0.5)(rewards, logps, mask_BG=mask)
  # row 0: stable ascending ranks [1, 2, 0, 3] of G = 4; row 1: [0, 2, 1] of the 3 valid, the 4th kept
  expected = [[1 - 0.5 / 4, 1 - 1 / 4, 1, 1 - 1.5 / 4], [1, 1 - 1 / 3, 1 - 0.5 / 3, 1]]
  np.testing.assert_allclose(shaped, expected, atol=1e-7)


def test_dynamic_sampling_mask():
  rewards = np.array([[1.0, 1, 1], [0, 0, 0], [1, 0, 1], [0.5, 0.5, 0.2]], np.float32)
  np.testing.assert_array_equal(J(dynamic_sampling_mask)(rewards), [False, False, True, True])
  mask = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 0]], bool)
  np.testing.assert_array_equal(J(dynamic_sampling_mask)(rewards, mask), [True, False, False, False])


# ---------------------------------------------------------------- properties


def test_ppo_is_minus_a_ratio_inside_clip_and_flat_where_clipped():
  _, old, adv, mask = _random(3)
  log_ratio = np.linspace(-0.7, 0.7, B * L).reshape(B, L)  # sweeps across both clip edges
  logp = (old + np.random.default_rng(3).permutation(log_ratio.ravel()).reshape(B, L)).astype(np.float32)
  loss, metrics, grad = ALL(logp, old, adv, mask)["ppo"]
  ratio = np.exp(logp.astype(np.float64) - old)
  inside = mask & (ratio > 0.8) & (ratio < 1.2)
  np.testing.assert_allclose(np.asarray(loss)[inside], (-adv * ratio)[inside], **TOL)
  clipped = mask & (((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8)))
  assert clipped.any() and inside.any()
  assert np.all(np.asarray(grad)[clipped] == 0.0)
  assert np.all(np.asarray(grad)[inside] != 0.0)
  assert float(metrics["clipfrac"]) == pytest.approx(clipped.sum() / mask.sum())


def test_gspo_with_identical_token_ratios_is_ppo():
  rng = np.random.default_rng(4)
  old = (-rng.random((B, L)) * 3).astype(np.float32)
  logp = (old + rng.normal(size=(B, 1)) * 0.3).astype(np.float32)  # one log-ratio per sequence
  adv = np.repeat(rng.normal(size=(B, 1)), L, axis=1).astype(np.float32)
  mask = np.arange(L)[None, :] < rng.integers(1, L + 1, B)[:, None]
  out = ALL(logp, old, adv, mask)
  np.testing.assert_allclose(out["gspo-sym"][0], out["ppo"][0], atol=1e-6)
  np.testing.assert_allclose(out["gspo-sym"][2], out["ppo"][2], atol=1e-6)


def test_kl_estimators_properties():
  rng = np.random.default_rng(5)
  logp = (-rng.random((B, L)) * 4).astype(np.float32)
  ref = (logp + rng.normal(size=(B, L)) * 2).astype(np.float32)
  out = KL(logp, ref, np.ones((B, L)))
  log_r = ref.astype(np.float64) - logp
  assert np.all(np.asarray(out["k3"][0]) >= 0.0)
  np.testing.assert_allclose(out["k1"][0], -log_r, **TOL)
  np.testing.assert_allclose(out["k2"][0], 0.5 * log_r**2, **TOL)
  np.testing.assert_allclose(out["k3"][0], np.expm1(log_r) - log_r, **TOL)
  np.testing.assert_allclose(out["k3"][1]["kl"], np.mean(np.expm1(log_r) - log_r), **TOL)
  near = logp + np.float32(1e-4) * rng.normal(size=(B, L)).astype(np.float32)  # rounding-prone region
  assert np.all(np.asarray(KL(logp, near, np.ones((B, L)))["k3"][0]) >= 0.0)
  for kind, (kl, metrics) in KL(logp, logp, np.ones((B, L))).items():
    assert np.all(np.asarray(kl) == 0.0) and float(metrics["kl"]) == 0.0, kind


def test_masked_garbage_and_empty_rows_give_finite_zero():
  logp, old, adv, mask = _random(6)
  logp = np.where(mask, logp, -np.inf).astype(np.float32)
  old = np.where(mask, old, np.nan).astype(np.float32)
  adv = np.where(mask, adv, np.inf).astype(np.float32)
  for name, (loss, metrics, grad) in ALL(logp, old, adv, mask).items():
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)), name
    assert np.all(np.asarray(loss)[~mask] == 0.0) and np.all(np.asarray(grad)[~mask] == 0.0), name
    assert all(np.isfinite(float(v)) for v in metrics.values()), name
  for name, (loss, metrics, grad) in ALL(logp, old, adv, np.zeros((B, L), bool)).items():
    assert np.all(np.asarray(loss) == 0.0) and np.all(np.asarray(grad) == 0.0), name
    assert all(float(v) == 0.0 for v in metrics.values()), name
  for kind, (kl, metrics) in KL(logp, old, mask).items():
    assert np.all(np.isfinite(kl)) and np.isfinite(float(metrics["kl"])), kind
    assert np.all(np.asarray(kl)[~mask] == 0.0), kind


def test_positive_and_negative_weights():
  """NSR (λ₊ = 0) trains only on negatives, PSR (λ₋ = 0) only on positives, W-REINFORCE scales."""
  logp, old, adv, mask = _random(7)
  out = ALL(logp, old, adv, mask)
  base, nsr, psr = (np.asarray(out[name][0]) for name in ("reinforce", "reinforce-nsr", "reinforce-psr"))
  pos = adv > 0
  assert np.all(nsr[pos] == 0.0) and np.any(nsr[~pos & mask] != 0.0)
  assert np.all(psr[~pos] == 0.0) and np.any(psr[pos & mask] != 0.0)
  np.testing.assert_allclose(nsr + psr, base, atol=1e-7)


def test_jit_equals_eager():
  logp, old, adv, mask = _random(8)
  out = ALL(logp, old, adv, mask)
  for kind in ("ppo", "gspo"):
    eager, _ = policy_loss(*[jnp.asarray(x) for x in (logp, old, adv, mask)], kind=kind)
    np.testing.assert_allclose(eager, out[kind][0], atol=1e-6)


def test_bad_arguments_are_reported():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="unknown policy loss kind"):
    policy_loss(x, x, x, x, kind="grpo")
  with pytest.raises(ValueError, match="dual_clip_c"):
    policy_loss(x, x, x, x, kind="cispo", dual_clip_c=3.0)
  with pytest.raises(ValueError, match="one shape"):
    policy_loss(x, jnp.zeros((2, 4)), x, x, kind="ppo")
  with pytest.raises(ValueError, match="unknown kl kind"):
    kl_penalty(x, x, "k4")


def test_registry():
  assert {"ppo", "dapo", "clip_higher", "gspo", "cispo", "topr", "reinforce"} == set(POLICY_LOSSES)
  logp, old, adv, mask = _random(9)
  via_registry, _ = jax.jit(POLICY_LOSSES["dapo"])(logp, old, adv, mask)
  np.testing.assert_array_equal(via_registry, ALL(logp, old, adv, mask)["dapo"][0])
