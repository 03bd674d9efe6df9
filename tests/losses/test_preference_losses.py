"""Preference losses against float64 NumPy references written here, the worked numbers of
reference/formulas.md §10, edge cases (policy == reference, huge margins) and one property each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.losses import preference as pref

B = 64
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _lsig(x):
  """log σ(x) in float64, stable for any sign."""
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def _sig(x):
  return np.exp(_lsig(x))


def _logps(seed, n=4):
  """n arrays of summed log-probs [B] (float32) as a model would give for 5–60-token completions."""
  rng = np.random.default_rng(seed)
  return [(-rng.uniform(5.0, 60.0, B)).astype(np.float32) for _ in range(n)]


def _f64(*xs):
  return [np.asarray(x, np.float64) for x in xs]


# ---------------------------------------------------------------- NumPy references (float64)


def np_dpo(pc, pr, rc, rr, beta, ls=0.0, robust=False):
  pc, pr, rc, rr = _f64(pc, pr, rc, rr)
  z = beta * ((pc - rc) - (pr - rr))
  if robust:
    return (-(1 - ls) * _lsig(z) + ls * _lsig(-z)) / (1 - 2 * ls)
  return -(1 - ls) * _lsig(z) - ls * _lsig(-z)


def np_ipo(pc, pr, rc, rr, beta, lc, lr):
  pc, pr, rc, rr, lc, lr = _f64(pc, pr, rc, rr, lc, lr)
  hbar = (pc - rc) / np.maximum(lc, 1) - (pr - rr) / np.maximum(lr, 1)
  return (hbar - 1 / (2 * beta)) ** 2


def np_hinge(pc, pr, rc, rr, beta):
  pc, pr, rc, rr = _f64(pc, pr, rc, rr)
  return np.maximum(0.0, 1 - beta * ((pc - rc) - (pr - rr)))


def np_simpo(ac, ar, beta, gamma, ls=0.0):
  ac, ar = _f64(ac, ar)
  z = beta * (ac - ar) - gamma
  return -(1 - ls) * _lsig(z) - ls * _lsig(-z)


def np_orpo(ac, ar, beta, nll=None):
  ac, ar = _f64(ac, ar)
  odds = lambda a: np.log(np.exp(a) / -np.expm1(a))  # log(p / (1 − p)), p = e^a
  nll = -ac if nll is None else np.asarray(nll, np.float64)
  return nll - beta * _lsig(odds(ac) - odds(ar))


def np_kto(p, r, desirable, kl, beta, wd=1.0, wu=1.0):
  p, r = _f64(p, r)
  z0 = max(float(kl), 0.0)
  lr = p - r
  return np.where(desirable, wd * (1 - _sig(beta * (lr - z0))), wu * (1 - _sig(beta * (z0 - lr))))


def np_bt(rw, rl, margin=None, center=None):
  rw, rl = _f64(rw, rl)
  out = -_lsig(rw - rl - (0.0 if margin is None else np.asarray(margin, np.float64)))
  return out if center is None else out + center * (rw + rl) ** 2


def _run(fn, *args):
  """Evaluates `fn` under one jit: one compile per test keeps the file fast on a 2-core machine."""
  return jax.tree.map(np.asarray, jax.jit(fn)(*args))


def _grads(fn, *args):
  """Gradients of Σ loss (the first output of `fn`) with respect to every argument."""
  return jax.grad(lambda *a: jnp.sum(fn(*a)[0]), argnums=tuple(range(len(args))))(*args)


# ---------------------------------------------------------------- parity on random inputs

def test_dpo_matches_numpy():
  pc, pr, rc, rr = _logps(0)
  cases = {"sigmoid": [(0.1, 0.0), (0.5, 0.1)], "robust": [(0.1, 0.1), (1.0, 0.3)]}

  def run(*a):  # each loss type once, vmapped over its (β, ε) settings
    return {t: jax.vmap(lambda b, ls, t=t: pref.dpo_loss(*a, beta=b, label_smoothing=ls, loss_type=t))(
      *jnp.float32(c).T) for t, c in cases.items()}

  outs = _run(run, pc, pr, rc, rr)
  for loss_type, settings in cases.items():
    for i, (beta, ls) in enumerate(settings):
      loss, m = jax.tree.map(lambda x, i=i: x[i], outs[loss_type])
      np.testing.assert_allclose(loss, np_dpo(pc, pr, rc, rr, beta, ls, loss_type == "robust"), **TOL)
      rw, rl = np.float32(beta) * (_f64(pc)[0] - rc), np.float32(beta) * (_f64(pr)[0] - rr)
      np.testing.assert_allclose(m["rewards/chosen"], rw, **TOL)
      np.testing.assert_allclose(m["rewards/rejected"], rl, **TOL)
      np.testing.assert_allclose(m["rewards/margins"], rw - rl, **TOL)
      np.testing.assert_array_equal(m["rewards/accuracies"], (rw - rl > 0).astype(np.float32))


def test_ipo_hinge_rpo_match_numpy():
  pc, pr, rc, rr = _logps(1)
  rng = np.random.default_rng(1)
  lc, lr = rng.integers(0, 40, B), rng.integers(1, 40, B)  # a zero length is clamped to 1
  nll = rng.uniform(0.1, 3.0, B).astype(np.float32)
  ipo, hinge, rpo = _run(lambda *a: (
    pref.ipo_loss(*a, beta=0.5, chosen_lengths_B=lc, rejected_lengths_B=lr),
    pref.hinge_loss(*a, beta=0.05),
    pref.rpo_loss(*a, nll, beta=0.1, rpo_alpha=0.7),
  ), pc, pr, rc, rr)
  np.testing.assert_allclose(ipo[0], np_ipo(pc, pr, rc, rr, 0.5, lc, lr), **TOL)
  np.testing.assert_allclose(ipo[1]["rewards/chosen"], 0.5 * (_f64(pc)[0] - rc) / np.maximum(lc, 1), **TOL)
  np.testing.assert_allclose(hinge[0], np_hinge(pc, pr, rc, rr, 0.05), **TOL)
  np.testing.assert_allclose(rpo[0], np_dpo(pc, pr, rc, rr, 0.1) + 0.7 * _f64(nll)[0], **TOL)
  np.testing.assert_allclose(rpo[1]["nll_loss"], nll)


def test_simpo_orpo_match_numpy():
  rng = np.random.default_rng(2)
  ac, ar = (-rng.uniform(0.01, 4.0, (2, B))).astype(np.float32)  # average log-probs, both sides of −ln 2
  nll = rng.uniform(0.1, 3.0, B).astype(np.float32)
  simpo, simpo_ratio, orpo, orpo_nll = _run(lambda a, b: (
    pref.simpo_loss(a, b, beta=2.0, gamma=1.0, label_smoothing=0.1),
    pref.simpo_loss(a, b, beta=2.0, gamma_beta_ratio=0.5),
    pref.orpo_loss(a, b, beta=0.25),
    pref.orpo_loss(a, b, nll, beta=0.25),
  ), ac, ar)
  np.testing.assert_allclose(simpo[0], np_simpo(ac, ar, 2.0, 1.0, 0.1), **TOL)
  np.testing.assert_allclose(simpo[1]["rewards/margins"], 2.0 * (_f64(ac)[0] - ar), **TOL)
  np.testing.assert_allclose(simpo_ratio[0], np_simpo(ac, ar, 2.0, 1.0), **TOL)
  np.testing.assert_allclose(orpo[0], np_orpo(ac, ar, 0.25), **TOL)
  np.testing.assert_allclose(orpo[1]["nll_loss"], -ac)
  np.testing.assert_allclose(orpo_nll[0], np_orpo(ac, ar, 0.25, nll), **TOL)


def test_kto_matches_numpy():
  p, r = _logps(3, 2)
  d = np.random.default_rng(3).uniform(size=B) < 0.4
  kls = (0.7, -0.2)
  outs, kl_estimate = _run(lambda p, r: (
    [pref.kto_loss(p, r, d, kl, beta=0.1, desirable_weight=1.3, undesirable_weight=0.8) for kl in kls],
    pref.kto_kl(p, r),
  ), p, r)
  for kl, (loss, m) in zip(kls, outs, strict=True):
    np.testing.assert_allclose(loss, np_kto(p, r, d, kl, 0.1, 1.3, 0.8), **TOL)
    np.testing.assert_allclose(m["count/chosen"], d)
    np.testing.assert_allclose(m["rewards/chosen_sum"], np.where(d, 0.1 * (_f64(p)[0] - r), 0.0), **TOL)
    np.testing.assert_allclose(m["kl"], np.full(B, max(kl, 0.0)), **TOL)
  assert float(kl_estimate) == pytest.approx(np.mean(_f64(p)[0] - r), abs=1e-5)


def test_bradley_terry_matches_numpy():
  rng = np.random.default_rng(5)
  rw, rl, margin = rng.normal(0.0, 3.0, (3, B)).astype(np.float32)
  plain, (loss, m) = _run(lambda a, b, c: (
    pref.bradley_terry_loss(a, b),
    pref.bradley_terry_loss(a, b, margin_B=c, center_rewards_coefficient=0.01),
  ), rw, rl, margin)
  np.testing.assert_allclose(plain[0], np_bt(rw, rl), **TOL)
  np.testing.assert_allclose(loss, np_bt(rw, rl, margin, 0.01), **TOL)
  np.testing.assert_array_equal(m["accuracy"], (rw > rl).astype(np.float32))
  np.testing.assert_allclose(m["margin"], _f64(rw)[0] - rl, **TOL)


# ---------------------------------------------------------------- worked numbers (formulas.md §10)


def test_worked_numbers():
  one = lambda v: jnp.float32([v])
  pc, pr, rc, rr = one(-10.0), one(-12.0), one(-11.0), one(-11.5)  # h = 1.5
  ac, ar = one(-2.0), one(-3.0)

  def all_losses():
    orpo, orpo_m = pref.orpo_loss(ac, ar, one(2.0), beta=0.1)
    return {
      "dpo": pref.dpo_loss(pc, pr, rc, rr, beta=0.1)[0],
      "cdpo": pref.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)[0],
      "robust": pref.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1, loss_type="robust")[0],
      "ipo": pref.ipo_loss(pc, pr, rc, rr, beta=0.1, chosen_lengths_B=one(5), rejected_lengths_B=one(4))[0],
      "ipo_sums": pref.ipo_loss(pc, pr, rc, rr, beta=0.1)[0],
      "hinge": pref.hinge_loss(pc, pr, rc, rr, beta=0.1)[0],
      "rpo": pref.rpo_loss(pc, pr, rc, rr, one(2.0), beta=0.1, rpo_alpha=1.0)[0],
      "simpo": pref.simpo_loss(ac, ar, beta=2.0, gamma=1.0)[0],
      "orpo": orpo,
      "orpo_default_nll": pref.orpo_loss(ac, ar, beta=0.1)[0],  # NLL = −ā_w = 2.0
      "log_odds_chosen": orpo_m["log_odds_chosen"],
      "log_odds_ratio": orpo_m["log_odds_ratio"],
      "kto": pref.kto_loss(jnp.float32([1.0, -0.5]), jnp.zeros(2), jnp.array([True, False]), 0.3)[0],
      "kto_negative_kl": pref.kto_loss(jnp.float32([1.0]), jnp.zeros(1), jnp.array([True]), -0.2)[0],
      "kto_zero_kl": pref.kto_loss(jnp.float32([1.0]), jnp.zeros(1), jnp.array([True]), 0.0)[0],
      "bt": pref.bradley_terry_loss(one(2.0), one(0.5))[0],
      "bt_margin": pref.bradley_terry_loss(one(2.0), one(0.5), margin_B=one(1.0))[0],
    }

  got = _run(all_losses)
  want = {
    "dpo": 0.620957, "cdpo": 0.635957, "robust": 0.602207, "ipo": 21.855625, "ipo_sums": 12.25,
    "hinge": 0.85, "rpo": 2.620957, "simpo": 0.313262, "orpo": 2.028875, "orpo_default_nll": 2.028875,
    "log_odds_chosen": 1.094344, "log_odds_ratio": -0.288751, "bt": 0.201413, "bt_margin": 0.474077,
  }
  for name, value in want.items():
    assert float(got[name][0]) == pytest.approx(value, abs=1e-5 if value > 10 else 1e-6), name
  np.testing.assert_allclose(got["kto"], [0.482507, 0.480011], atol=1e-6)
  np.testing.assert_array_equal(got["kto_negative_kl"], got["kto_zero_kl"])  # z0 = max(0, KL)


# ---------------------------------------------------------------- edge cases


def test_policy_equal_reference_gives_log2():
  pc, pr, _, _ = _logps(6)
  cases = [(0.0, "sigmoid"), (0.2, "sigmoid"), (0.3, "robust")]
  outs = _run(lambda a, b: [pref.dpo_loss(a, b, a, b, beta=0.3, label_smoothing=ls, loss_type=t)
                            for ls, t in cases], pc, pr)
  for loss, m in outs:
    np.testing.assert_allclose(loss, np.full(B, np.log(2.0)), atol=1e-7)
    np.testing.assert_array_equal(m["rewards/accuracies"], np.zeros(B))  # ties are not correct


def test_huge_margins_stay_finite():
  zero = jnp.zeros(4)
  calls = {
    "dpo": lambda x: pref.dpo_loss(x, -x, zero, zero, beta=1.0, label_smoothing=0.1),
    "robust": lambda x: pref.dpo_loss(x, -x, zero, zero, beta=1.0, label_smoothing=0.1, loss_type="robust"),
    "ipo": lambda x: pref.ipo_loss(x, -x, zero, zero, beta=0.1),
    "hinge": lambda x: pref.hinge_loss(x, -x, zero, zero),
    "rpo": lambda x: pref.rpo_loss(x, -x, zero, zero, -x),
    "simpo": lambda x: pref.simpo_loss(x, -x, beta=2.0),
    "orpo": lambda x: pref.orpo_loss(jnp.minimum(x, 0.0), jnp.minimum(-x, 0.0)),  # ā ∈ {0, −1e4}
    "kto": lambda x: pref.kto_loss(x, zero, jnp.array([True, True, False, False]), 0.5),
    "bradley_terry": lambda x: pref.bradley_terry_loss(x, -x),
  }
  with_grad = ("robust", "orpo", "kto", "bradley_terry")  # those with exp/log (the others are polynomials
  # or the same log σ as robust)
  big = np.float32([1e4, -1e4, 1e4, -1e4])
  losses, grads = _run(lambda x: ({k: fn(x)[0] for k, fn in calls.items()},
                                  {k: _grads(calls[k], x)[0] for k in with_grad}), big)
  for name, loss in losses.items():
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grads.get(name, 0.0))), name
  # the sigmoid losses saturate exactly: −log σ(2e4) = 0 and −log σ(−2e4) = 2e4 (ε = 0.1 mixes the two)
  np.testing.assert_allclose(losses["dpo"], [2e3, 1.8e4, 2e3, 1.8e4], rtol=1e-6)
  np.testing.assert_allclose(losses["bradley_terry"], [0, 2e4, 0, 2e4], rtol=1e-6)


def test_label_smoothing_half_is_symmetric_with_minimum_log2():
  """ε = 0.5 (a coin-flip label) makes the loss even in the margin with its minimum, log 2, at zero:
  the data then carries no preference and the gradient pulls any margin back to 0. (It is not
  constant: −½[log σ(z) + log σ(−z)] = ½ log(2 + 2 cosh z).)"""
  zero = jnp.zeros(61)
  fn = lambda x: pref.dpo_loss(x, zero, zero, zero, beta=0.2, label_smoothing=0.5)
  h = np.linspace(-30.0, 30.0, 61).astype(np.float32)  # symmetric around 0 (index 30)
  pos, grad = _run(lambda x: (fn(x)[0], _grads(fn, x)[0]), h)
  np.testing.assert_allclose(pos, pos[::-1], rtol=1e-6)
  np.testing.assert_allclose(pos, 0.5 * np.log(2 + 2 * np.cosh(0.2 * _f64(h)[0])), rtol=1e-6)
  assert int(np.argmin(pos)) == 30 and pos[30] == pytest.approx(np.log(2.0), abs=1e-7)
  assert np.all(np.sign(grad) == np.sign(h))


def test_invalid_options_raise():
  x = np.zeros(2, np.float32)
  with pytest.raises(ValueError, match="label_smoothing < 0.5"):
    pref.dpo_loss(x, x, x, x, label_smoothing=0.5, loss_type="robust")
  with pytest.raises(ValueError, match="loss_type"):
    pref.dpo_loss(x, x, x, x, loss_type="exo_pair")
  with pytest.raises(ValueError, match="both"):
    pref.ipo_loss(x, x, x, x, chosen_lengths_B=x)
  with pytest.raises(ValueError, match="not both"):
    pref.simpo_loss(x, x, gamma=1.0, gamma_beta_ratio=0.5)


# ---------------------------------------------------------------- properties


def test_gradient_pushes_chosen_up_and_rejected_down():
  pc, pr, rc, rr = _logps(7)
  fns = {
    "dpo": lambda a, b, c, d: pref.dpo_loss(a, b, c, d, beta=0.1),
    "robust": lambda a, b, c, d: pref.dpo_loss(a, b, c, d, label_smoothing=0.2, loss_type="robust"),
    "hinge": lambda a, b, c, d: pref.hinge_loss(a, b, c, d, beta=0.01),  # βh < 1: every pair active
  }
  outs = _run(lambda *a: {k: _grads(fn, *a) for k, fn in fns.items()}, pc, pr, rc, rr)
  for name, (g_pc, g_pr, g_rc, g_rr) in outs.items():
    assert np.all(g_pc < 0) and np.all(g_pr > 0), name  # descent raises chosen, lowers rejected
    np.testing.assert_allclose(g_rc, -g_pc, rtol=1e-6)  # the reference enters only through h
    np.testing.assert_allclose(g_rr, -g_pr, rtol=1e-6)


def test_robust_dpo_is_unbiased_under_label_flips():
  """(1−ε)·L_rob(h) + ε·L_rob(−h) = −log σ(βh): in expectation over flips it is the clean DPO loss."""
  pc, pr, rc, rr = _logps(8)
  eps = 0.2
  rob = lambda a, b, c, d: pref.dpo_loss(a, b, c, d, beta=0.1, label_smoothing=eps, loss_type="robust")[0]
  expected, clean = _run(lambda a, b, c, d: (
    (1 - eps) * rob(a, b, c, d) + eps * rob(b, a, d, c), pref.dpo_loss(a, b, c, d, beta=0.1)[0]
  ), pc, pr, rc, rr)
  np.testing.assert_allclose(expected, clean, rtol=1e-5, atol=1e-6)


def test_ipo_minimum_at_margin_one_over_two_beta():
  zero = jnp.zeros(81)
  fn = lambda x: pref.ipo_loss(x, zero, zero, zero, beta=0.25)
  hbar = np.linspace(0.0, 4.0, 81).astype(np.float32)  # 1/(2β) = 2 at index 40
  loss, g = _run(lambda x: (fn(x)[0], _grads(fn, x)[0]), hbar)
  assert int(np.argmin(loss)) == 40 and loss[40] == 0.0
  assert g[40] == 0.0 and np.all(g[:40] < 0) and np.all(g[41:] > 0)


def test_simpo_depends_only_on_the_average_logp_difference():
  rng = np.random.default_rng(9)
  ac, ar = (-rng.uniform(0.1, 3.0, (2, B))).astype(np.float32)
  fn = lambda a, b: pref.simpo_loss(a, b, beta=2.0, gamma=0.8)
  a, b, (g_c, g_r) = _run(lambda x, y: (fn(x, y)[0], fn(x - 1.5, y - 1.5)[0], _grads(fn, x, y)), ac, ar)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_c, -g_r, rtol=1e-6)
  assert np.all(g_c < 0)


def test_orpo_log_odds_and_gradient_direction():
  rng = np.random.default_rng(10)
  ac, ar = (-rng.uniform(0.05, 3.0, (2, B))).astype(np.float32)
  (_, m), (g_c, g_r) = _run(lambda x, y: (pref.orpo_loss(x, y), _grads(pref.orpo_loss, x, y)), ac, ar)
  p_c, p_r = np.exp(_f64(ac)[0]), np.exp(_f64(ar)[0])
  np.testing.assert_allclose(m["log_odds_chosen"], np.log(p_c / (1 - p_c)) - np.log(p_r / (1 - p_r)), **TOL)
  assert np.all(g_c < 0) and np.all(g_r > 0)


def test_kto_symmetry_and_no_gradient_through_kl():
  rng = np.random.default_rng(11)
  z0, d = 0.4, rng.uniform(-20.0, 20.0, B).astype(np.float32)
  zeros, ones = jnp.zeros(B), jnp.ones(B, bool)
  desirable = rng.uniform(size=B) < 0.5

  def run(d):
    up = pref.kto_loss(z0 + d, zeros, ones, z0, beta=0.3)[0]
    down = pref.kto_loss(z0 - d, zeros, ~ones, z0, beta=0.3)[0]
    g_kl = jax.grad(lambda k: jnp.sum(pref.kto_loss(d, zeros, ones, k)[0]))(0.5)
    g = _grads(lambda p: pref.kto_loss(p, zeros, desirable, z0), d)[0]
    return up, down, g_kl, g

  up, down, g_kl, g = _run(run, d)
  np.testing.assert_allclose(up, down, rtol=1e-5, atol=1e-6)
  assert float(g_kl) == 0.0
  assert np.all(g[desirable] < 0) and np.all(g[~desirable] > 0)


def test_bradley_terry_margin_is_a_shift_and_gradient_direction():
  rng = np.random.default_rng(12)
  rw, rl, m = rng.normal(0.0, 2.0, (3, B)).astype(np.float32)
  bt = pref.bradley_terry_loss
  centred = lambda a, b: bt(a, b, center_rewards_coefficient=0.1)
  with_m, shifted, (g_w, g_l), (g_w2, g_l2) = _run(lambda a, b, c: (
    bt(a, b, margin_B=c)[0], bt(a - c, b)[0], _grads(bt, a, b), _grads(centred, a, b)
  ), rw, rl, m)
  np.testing.assert_allclose(with_m, shifted, rtol=1e-6)
  assert np.all(g_w < 0) and np.all(g_l > 0)
  # the centring term only pulls the pair's sum toward zero: the same push 2c(r_w + r_l) on both scores
  np.testing.assert_allclose(g_w2 - g_w, 0.2 * (_f64(rw)[0] + rl), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_l2 - g_l, 0.2 * (_f64(rw)[0] + rl), rtol=1e-5, atol=1e-6)


def test_registry_uses_the_names_users_know():
  for name in ("dpo", "sigmoid", "robust", "ipo", "hinge", "simpo", "orpo", "kto", "rpo", "bradley_terry"):
    assert callable(pref.PREFERENCE_LOSSES[name])
  assert pref.PREFERENCE_LOSSES["sigmoid"] is pref.dpo_loss
  pc, pr, rc, rr = _logps(13)
  loss, _ = _run(lambda *a: pref.PREFERENCE_LOSSES["robust"](*a, label_smoothing=0.1), pc, pr, rc, rr)
  np.testing.assert_allclose(loss, np_dpo(pc, pr, rc, rr, 0.1, 0.1, robust=True), **TOL)
