"""Group advantages (w2s_jax/advantages/group.py) against float64 NumPy ports of verl/TRL's loops, the
worked numbers of reference/formulas.md §8–§9, and their defining properties."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.advantages import (
  ADVANTAGE_ESTIMATORS,
  broadcast_to_tokens,
  dr_grpo_advantages,
  grpo_advantages,
  reinforce_advantages,
  reinforce_pp_advantages,
  reinforce_pp_baseline_advantages,
  rloo_advantages,
  w_reinforce_advantages,
)

TOL = dict(atol=1e-6, rtol=1e-6)


@functools.cache
def J(fn, **static):
  """A cached jitted version of fn with static keywords: eager dispatch compiles every primitive per shape
  (seconds on this machine), one jit compiles the whole function once."""
  return jax.jit(functools.partial(fn, **static))


# Every sequence-level estimator and setting, computed in one compiled program per input shape.
SETTINGS = {
  "reinforce": (reinforce_advantages, {}),
  "rloo": (rloo_advantages, {}),
  "grpo": (grpo_advantages, {}),  # verl: eps 1e-6, unbiased std
  "grpo-trl": (grpo_advantages, dict(eps=1e-4)),
  "grpo-biased": (grpo_advantages, dict(eps=1e-4, unbiased_std=False)),
  "grpo-batch": (grpo_advantages, dict(scale_rewards="batch")),
  "grpo-eps0": (grpo_advantages, dict(eps=0.0)),
  "grpo-batch-eps0": (grpo_advantages, dict(eps=0.0, scale_rewards="batch")),
  "dr_grpo": (dr_grpo_advantages, {}),
  "w_reinforce": (w_reinforce_advantages, {}),
  "psr": (ADVANTAGE_ESTIMATORS["psr"], {}),
  "nsr": (ADVANTAGE_ESTIMATORS["nsr"], {}),
}
GRPO_REF = {"grpo": ("group", 1, 1e-6), "grpo-trl": ("group", 1, 1e-4), "grpo-biased": ("group", 0, 1e-4),
            "grpo-batch": ("batch", 1, 1e-6), "dr_grpo": ("none", 1, 1e-6)}


@jax.jit
def ALL(rewards_BG, mask_BG=None):
  """{setting name: advantages [B, G]} for every entry of SETTINGS."""
  return {name: fn(rewards_BG, mask_BG, **kw) for name, (fn, kw) in SETTINGS.items()}


@pytest.fixture(autouse=True)
def _no_rank_promotion():
  with jax.numpy_rank_promotion("raise"):
    yield


# ---------------------------------------------------------------- float64 references, loop by loop


def _groups(rewards, mask):
  """{group index: [(member index, reward)]} of the valid members, like verl's id2score by uid."""
  out = {}
  for b in range(rewards.shape[0]):
    out[b] = [(g, float(rewards[b, g])) for g in range(rewards.shape[1]) if mask[b, g]]
  return out


def np_grpo(rewards, mask, eps=1e-6, ddof=1, scale="group"):
  adv = np.zeros(rewards.shape)
  all_valid = np.array([float(r) for r, m in zip(rewards.ravel(), mask.ravel()) if m])
  batch_std = np.std(all_valid, ddof=ddof) if len(all_valid) > ddof else 0.0
  for b, members in _groups(rewards, mask).items():
    scores = np.array([r for _, r in members])
    if len(scores) == 0:
      continue
    if len(scores) == 1:
      mean, std = 0.0, 1.0
    else:
      mean, std = scores.mean(), np.std(scores, ddof=ddof)
    if len(scores) >= 2 and np.all(scores == scores[0]):
      continue  # exactly 0
    for g, r in members:
      if scale == "none":
        adv[b, g] = r - mean
      elif scale == "group":
        adv[b, g] = (r - mean) / (std + eps)
      else:
        adv[b, g] = (r - mean) / (batch_std + eps)
  return adv


def np_rloo(rewards, mask):
  adv = np.zeros(rewards.shape)
  for b, members in _groups(rewards, mask).items():
    if len(members) == 1:
      adv[b, members[0][0]] = members[0][1]
      continue
    for g, r in members:
      others = [s for h, s in members if h != g]
      adv[b, g] = r - sum(others) / len(others)
  return adv


def np_whiten(values, mask):
  v = values[mask > 0]
  var = v.var() * len(v) / max(len(v) - 1, 1)
  out = (values - v.mean()) / np.sqrt(var + 1e-8)
  return np.where(mask > 0, out, 0.0)


def np_reinforce_pp(token_rewards, mask, gamma):
  returns = np.zeros(token_rewards.shape)
  for n in range(token_rewards.shape[0]):
    running = 0.0
    for t in reversed(range(token_rewards.shape[1])):
      if mask[n, t]:
        running = token_rewards[n, t] + gamma * running
        returns[n, t] = running
  return np_whiten(returns, mask), returns


def _random(seed, B=5, G=6, discrete=False):
  rng = np.random.default_rng(seed)
  rewards = rng.integers(0, 2, (B, G)).astype(np.float32) if discrete else rng.normal(size=(B, G)).astype(
    np.float32
  )
  mask = rng.random((B, G)) > 0.25
  mask[0] = True
  mask[1] = False  # an empty group
  mask[2] = False
  mask[2, 3] = True  # a singleton group
  rewards[3] = 0.1  # zero variance; 0.1 is not exact in binary, so a naive mean leaves residue
  mask[3] = True
  return rewards, mask


# ---------------------------------------------------------------- worked numbers (formulas.md)


def test_worked_examples_from_formulas():
  out = ALL(jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
  np.testing.assert_allclose(out["grpo"][0], [0.866024, -0.866024, -0.866024, 0.866024], atol=1e-6)
  np.testing.assert_array_equal(out["grpo"][1], 0.0)
  np.testing.assert_allclose(out["grpo-trl"][0], [0.865875, -0.865875, -0.865875, 0.865875], atol=1e-6)
  np.testing.assert_allclose(out["dr_grpo"][0], [0.5, -0.5, -0.5, 0.5], atol=1e-7)
  np.testing.assert_allclose(out["rloo"][0], [2 / 3, -2 / 3, -2 / 3, 2 / 3], atol=1e-6)
  out = ALL(jnp.array([[1.0, 0, 1, 0], [0, 0, 0, 1]]))
  np.testing.assert_allclose(out["w_reinforce"][0], [0.1, -1, 0.1, -1], atol=1e-7)
  np.testing.assert_allclose(out["psr"][0], [1, 0, 1, 0])
  np.testing.assert_allclose(out["nsr"][0], [0, -1, 0, -1])


def test_reinforce_pp_worked_examples():
  rewards_BG = jnp.array([[1.0, 0, 0, 1], [1, 1, 1, 0]])
  mask_NL = jnp.ones((8, 1))
  base = J(reinforce_pp_baseline_advantages)(rewards_BG, mask_NL)
  np.testing.assert_allclose(base[:, 0], [1, -1, -1, 1, 0.5, 0.5, 0.5, -1.5], atol=1e-6)
  adv, returns = J(reinforce_pp_advantages)(rewards_BG.reshape(8, 1), mask_NL)
  a, b = 0.724569, -1.207615
  np.testing.assert_allclose(adv[:, 0], [a, b, b, a, a, a, a, b], atol=1e-6)
  np.testing.assert_allclose(returns[:, 0], rewards_BG.reshape(-1))


# ---------------------------------------------------------------- against the references


def test_group_estimators_match_reference():
  for seed in range(3):
    rewards, mask = _random(seed, discrete=seed == 2)
    out = ALL(rewards, mask)
    f64 = rewards.astype(np.float64)
    for name, (scale, ddof, eps) in GRPO_REF.items():
      np.testing.assert_allclose(out[name], np_grpo(f64, mask, eps, ddof, scale), err_msg=name, **TOL)
    np.testing.assert_allclose(out["rloo"], np_rloo(f64, mask), **TOL)
    np.testing.assert_allclose(out["reinforce"], np.where(mask, f64 - f64[mask].mean(), 0.0), **TOL)
    np.testing.assert_allclose(out["w_reinforce"], np.where(mask, 0.1 * f64 - (1 - f64), 0.0), **TOL)


def test_no_mask_equals_all_true_mask():
  rewards, _ = _random(3)
  unmasked, all_true = ALL(rewards), ALL(rewards, np.ones(rewards.shape, bool))
  f64 = rewards.astype(np.float64)
  np.testing.assert_allclose(unmasked["reinforce"], f64 - f64.mean(), **TOL)
  for name in SETTINGS:
    np.testing.assert_allclose(unmasked[name], all_true[name], atol=1e-6, err_msg=name)


def test_reinforce_pp_matches_reference():
  rng = np.random.default_rng(4)
  token_rewards = rng.normal(size=(6, 7)).astype(np.float32)
  mask = rng.random((6, 7)) > 0.3
  mask[2] = False
  for gamma in (1.0, 0.9):
    adv, returns = J(reinforce_pp_advantages)(token_rewards, mask, gamma=gamma)  # γ traced: one compile
    ref_adv, ref_returns = np_reinforce_pp(token_rewards.astype(np.float64), mask, gamma)
    np.testing.assert_allclose(returns, ref_returns, **TOL)
    np.testing.assert_allclose(adv, ref_adv, atol=2e-6, rtol=2e-6)


def test_reinforce_pp_baseline_matches_reference_with_padding():
  rewards, mask_BG = _random(5, discrete=True)
  B, G, L = rewards.shape[0], rewards.shape[1], 4
  token_mask = np.random.default_rng(5).random((B * G, L)) > 0.3
  out = J(reinforce_pp_baseline_advantages)(rewards, token_mask, mask_BG)
  centered = np_grpo(rewards.astype(np.float64), mask_BG, scale="none")
  tok_valid = token_mask & mask_BG.reshape(-1)[:, None]
  expected = np_whiten(np.broadcast_to(centered.reshape(-1, 1), (B * G, L)), tok_valid)
  np.testing.assert_allclose(out, expected, **TOL)
  out_BGL = J(reinforce_pp_baseline_advantages)(rewards, token_mask.reshape(B, G, L), mask_BG)
  # Same values, another layout: XLA reduces a [B, G, L] mask in another order than a [B·G, L] one, so the
  # float32 mean/variance of the whitening differ by a few ulp (2.4e-7 relative seen on some x86-64 CPUs;
  # eps32 ≈ 1.2e-7). 1e-6 bounds that; a layout bug (wrong row ↔ mask pairing) is off by O(1).
  np.testing.assert_allclose(out_BGL, np.asarray(out).reshape(B, G, L), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- properties


def test_rloo_sums_to_zero_per_group():
  for seed in range(3):
    rewards, mask = _random(seed)
    mask[2] = mask[0]  # no singleton here: its advantage is the raw reward by convention
    adv = np.asarray(ALL(rewards, mask)["rloo"], np.float64)
    np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-5)
    assert np.all(adv[~mask] == 0.0)


def test_grpo_zero_variance_group_is_exactly_zero_not_nan():
  rewards = jnp.array([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7], [1.0, 1.0, 1.0], [0.3, 0.3, 0.9]])
  out = ALL(rewards)
  for name in ("reinforce", "w_reinforce", "psr", "nsr"):  # no baseline per group: nothing to test here
    out.pop(name)
  for name, adv in out.items():
    adv = np.asarray(adv)
    assert np.all(np.isfinite(adv)), name
    assert np.all(adv[:3] == 0.0), name
    assert np.all(adv[3] != 0.0), name
  # A whole batch with one reward value: no 0/0 in the batch-std form, exact 0 for the batch baseline.
  for name, adv in ALL(jnp.full((4, 3), 0.3)).items():
    assert np.all(np.asarray(adv) == 0.0) or name in ("w_reinforce", "psr", "nsr"), name


def test_dr_grpo_is_grpo_times_std():
  rewards, mask = _random(6)
  mask[2] = mask[0]
  out = ALL(rewards, mask)
  grpo, dr = np.asarray(out["grpo"], np.float64), np.asarray(out["dr_grpo"], np.float64)
  std = np.array([np.std(rewards[b][mask[b]].astype(np.float64), ddof=1) if mask[b].sum() > 1 else 0.0
                  for b in range(rewards.shape[0])])
  np.testing.assert_allclose(dr, grpo * (std[:, None] + 1e-6), **TOL)


def test_edge_cases_single_sample_and_empty_groups():
  rewards = np.array([[0.7, 5.0, 5.0], [1.0, 5.0, 5.0]], np.float32)
  single = np.array([[True, False, False], [True, False, False]])
  out = ALL(rewards, single)
  np.testing.assert_allclose(out["grpo"][:, 0], [0.7 / (1 + 1e-6), 1 / (1 + 1e-6)], atol=1e-7)
  np.testing.assert_allclose(out["rloo"][:, 0], [0.7, 1.0])
  np.testing.assert_allclose(out["dr_grpo"][:, 0], [0.7, 1.0])
  np.testing.assert_allclose(out["reinforce"][:, 0], [-0.15, 0.15], atol=1e-7)
  for name, adv in out.items():
    assert np.all(np.asarray(adv)[:, 1:] == 0.0), name
  for name, adv in ALL(rewards, np.zeros((2, 3), bool)).items():
    assert np.all(np.asarray(adv) == 0.0), name


def test_jit_equals_eager():
  rewards, mask = _random(7)
  out = ALL(rewards, mask)
  for name in ("rloo", "grpo"):
    eager = ADVANTAGE_ESTIMATORS[name](jnp.asarray(rewards), jnp.asarray(mask))
    np.testing.assert_allclose(out[name], eager, atol=1e-7)


def test_broadcast_to_tokens():
  adv_BG = jnp.arange(6.0).reshape(2, 3)
  mask_BGL = jnp.asarray(np.random.default_rng(0).random((2, 3, 4)) > 0.5)
  out = J(broadcast_to_tokens)(adv_BG, mask_BGL)
  np.testing.assert_array_equal(out, np.where(mask_BGL, np.asarray(adv_BG)[..., None], 0.0))
  flat = J(broadcast_to_tokens)(adv_BG, mask_BGL.reshape(6, 4))
  np.testing.assert_array_equal(flat, np.asarray(out).reshape(6, 4))
  with pytest.raises(ValueError, match="must be"):
    broadcast_to_tokens(adv_BG, jnp.ones((5, 4)))


def test_bad_inputs_say_what_to_do():
  with pytest.raises(ValueError, match="reshape"):
    grpo_advantages(jnp.ones(8))
  with pytest.raises(ValueError, match="scale_rewards"):
    grpo_advantages(jnp.ones((2, 4)), scale_rewards="std")
  with pytest.raises(ValueError, match="mask_BG"):
    rloo_advantages(jnp.ones((2, 4)), jnp.ones((2, 3)))


def test_registry_names():
  assert {"reinforce", "rloo", "grpo", "dr_grpo", "reinforce_pp", "gae"} <= set(ADVANTAGE_ESTIMATORS)
