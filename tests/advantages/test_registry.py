"""The advantage registry (w2s_jax/advantages/registry.py): every config name resolves to an entry of one
signature, entries name their pure function, and an entry's output equals that function's."""

import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.advantages import (
  ADVANTAGE_ESTIMATORS,
  ADVANTAGES,
  AdvantageOptions,
  RolloutAdvantageInputs,
  broadcast_to_tokens,
  grpo_advantages,
)

B, G, N = 2, 3, 4
NEEDS = {"values", "tokens", "tree", "mc_returns", "keep"}


def _inputs(tokens_RN: np.ndarray | None = None) -> RolloutAdvantageInputs:
  rng = np.random.default_rng(0)
  R = B * G
  mask_RN = (np.arange(N)[None] < rng.integers(1, N + 1, size=R)[:, None]).astype(np.float32)
  return RolloutAdvantageInputs(
    rewards_R=rng.normal(size=R).astype(np.float32), mask_RN=mask_RN, valid_R=np.ones(R, np.float32),
    kl_RN=np.zeros((R, N), np.float32), kl_coef=np.float32(0.0),
    values_RN=rng.normal(size=(R, N)).astype(np.float32), tokens_RN=tokens_RN)


def test_every_config_name_has_an_entry_with_known_needs():
  assert {"grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "gae", "tempo", "treerl", "vineppo",
          "rft"} <= set(ADVANTAGES)
  for name, entry in ADVANTAGES.items():
    assert entry.name == name and set(entry.needs) <= NEEDS, name
    assert entry.fn is not None or "keep" in entry.needs, name
  # the plain estimators of ADVANTAGE_ESTIMATORS are the registry's functions
  for name, fn in ADVANTAGE_ESTIMATORS.items():
    assert ADVANTAGES[name].fn is fn, name


def test_grpo_entry_is_grpo_spread_over_tokens():
  batch = _inputs()
  options = AdvantageOptions(group_size=G, grpo_eps=1e-4)
  adv_RN, returns_RN = jax.jit(ADVANTAGES["grpo"], static_argnums=1)(batch, options)
  want_BG = grpo_advantages(jnp.asarray(batch.rewards_R).reshape(B, G), jnp.ones((B, G)), eps=1e-4)
  np.testing.assert_allclose(adv_RN, broadcast_to_tokens(want_BG, batch.mask_RN), atol=1e-6)
  np.testing.assert_array_equal(returns_RN, 0.0)


def test_tempo_entry_without_shared_prefixes_equals_grpo():
  tokens_RN = np.arange(B * G * N, dtype=np.int32).reshape(B * G, N)  # no two responses share a token
  batch = _inputs(tokens_RN)
  options = AdvantageOptions(group_size=G)
  run = jax.jit(lambda b, name: ADVANTAGES[name](b, options), static_argnums=1)
  np.testing.assert_allclose(run(batch, "tempo")[0], run(batch, "grpo")[0], atol=1e-5)
