"""Process rewards (Math-Shepherd labels, PAV, implicit PRM, PRM best-of-N) against hand-computed numbers.

Worked numbers are formulas.md §4–§6; the references are plain Python loops.
"""

import functools

import jax
import numpy as np
import pytest

from w2s_jax.advantages.process import (
  implicit_prm_q,
  implicit_prm_step_rewards,
  math_shepherd_labels,
  outcome_step_rewards,
  pav_progress,
  pav_rewards,
  prm_best_of_n,
  prm_solution_scores,
)
from w2s_jax.advantages.tree import mc_step_values

# --- Math-Shepherd ----------------------------------------------------------------------------------------


def test_math_shepherd_worked_example_and_masks():
  answers = np.array([[7, 7, 5, 7, 3, 5, 5, 5], [5, 3, 5, 5, 5, 3, 3, 3], [7, 1, 1, 1, 1, 1, 1, 1]])
  mask = np.ones_like(answers, bool)
  mask[2, 0] = False  # the only correct completion of step 2 is padding
  hard, soft = jax.jit(math_shepherd_labels)(answers == 7, mask)
  np.testing.assert_allclose(hard, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(soft, [0.375, 0.0, 0.0])
  # Without a mask the soft label is the MC value of 0/1 returns (OmegaPRM's MC(s) = c / k).
  hard, soft = jax.jit(math_shepherd_labels)(answers == 7)
  np.testing.assert_allclose(hard, [1.0, 0.0, 1.0])
  np.testing.assert_allclose(soft, mc_step_values((answers == 7).astype(np.float32)), atol=1e-7)
  # A step with no completions at all gets 0 and 0.
  hard, soft = jax.jit(math_shepherd_labels)(answers == 7, np.zeros_like(mask))
  np.testing.assert_array_equal(hard, 0.0)
  np.testing.assert_array_equal(soft, 0.0)


def test_math_shepherd_random_against_loop():
  rng = np.random.default_rng(0)
  correct = rng.random((2, 5, 8)) < 0.3
  mask = rng.random((2, 5, 8)) < 0.8
  hard, soft = jax.jit(math_shepherd_labels)(correct, mask)
  for b in range(2):
    for i in range(5):
      hits = [c for c, m in zip(correct[b, i], mask[b, i]) if m]
      assert hard[b, i] == float(any(hits))
      assert soft[b, i] == pytest.approx(sum(hits) / max(len(hits), 1), abs=1e-6)


# --- PRM solution scores and best-of-N ----------------------------------------------------------------------

scores_fn = jax.jit(prm_solution_scores, static_argnames=("reduce",))


@pytest.mark.parametrize(
  "reduce,expected", [("min", 0.3), ("last", 0.6), ("prod", 0.9 * 0.8 * 0.3 * 0.6), ("mean", 0.65)]
)
def test_prm_solution_scores(reduce, expected):
  # Math-Shepherd: step scores [0.9, 0.8, 0.3, 0.6] → min 0.3. Row 2 has two real steps, row 3 none.
  steps = np.array([[0.9, 0.8, 0.3, 0.6], [0.5, 0.7, 0.0, 0.1], [0.2, 0.2, 0.2, 0.2]], np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
  got = np.asarray(scores_fn(steps, mask, reduce=reduce))
  second = {"min": 0.5, "last": 0.7, "prod": 0.35, "mean": 0.6}[reduce]
  empty = 1.0 if reduce == "prod" else 0.0
  np.testing.assert_allclose(got, [expected, second, empty], atol=1e-6)


def test_prm_solution_scores_rejects_unknown_reduction():
  with pytest.raises(ValueError, match="reduce"):
    prm_solution_scores(np.ones((2, 3)), reduce="max")


best_fn = jax.jit(prm_best_of_n, static_argnames=("vote",))


def test_prm_best_of_n_argmax_and_weighted_vote():
  scores = np.array([0.9, 0.5, 0.45, 0.3], np.float32)
  answers = np.array([1, 2, 2, 2])
  index, weights = best_fn(scores, answers, vote=False)
  assert int(index) == 0
  np.testing.assert_allclose(weights, scores)
  # Weighted vote: answer 2 collects 0.5 + 0.45 + 0.3 = 1.25 > 0.9; the first candidate with answer 2 wins.
  index, weights = best_fn(scores, answers, vote=True)
  assert int(index) == 1
  np.testing.assert_allclose(weights, [0.9, 1.25, 1.25, 1.25], atol=1e-6)
  # Candidates without an answer (id −1) neither vote nor win.
  index, weights = best_fn(np.array([0.99, 0.2, 0.35, 0.1], np.float32), np.array([-1, 4, 5, 4]), vote=True)
  assert int(index) == 2  # answer 5: 0.35 beats answer 4: 0.2 + 0.1; the unanswered 0.99 does not count
  np.testing.assert_allclose(weights, [-np.inf, 0.3, 0.35, 0.3], atol=1e-6)
  with pytest.raises(ValueError, match="answer_ids_N"):
    prm_best_of_n(scores, vote=True)


def test_prm_best_of_n_batched_against_loop():
  rng = np.random.default_rng(1)
  scores = rng.random((6, 4)).astype(np.float32)
  answers = rng.integers(-1, 3, (6, 4))
  index, _ = best_fn(scores, answers, vote=True)
  for b in range(6):
    totals = [
      sum(s for s, a in zip(scores[b], answers[b]) if a == answers[b, i]) if answers[b, i] >= 0 else -np.inf
      for i in range(4)
    ]
    assert totals[int(index[b])] == pytest.approx(max(totals), abs=1e-6)


# --- PAV ---------------------------------------------------------------------------------------------------


def test_pav_worked_example():
  # Q^μ before 0.30, after 0.50 → progress 0.2; with Q^π = 0.6: α = 0 → 0.6, 1 → 0.8, 3 → 1.2.
  progress = jax.jit(pav_progress)(np.array([0.3, 0.5], np.float32))
  np.testing.assert_allclose(progress, [0.2], atol=1e-6)
  rewards_fn = jax.jit(pav_rewards)
  for alpha, expected in [(0.0, 0.6), (1.0, 0.8), (3.0, 1.2)]:
    np.testing.assert_allclose(rewards_fn(np.array([0.6]), progress, alpha=alpha), [expected], atol=1e-6)


def test_pav_padded_steps_and_rl_rewards():
  # Three real steps; the prover's values at the 4 boundaries, then padding.
  values_T = np.array([[0.2, 0.5, 0.4, 1.0, 9.0], [0.5, 0.0, 9.0, 9.0, 9.0]], np.float32)
  mask_S = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
  progress = jax.jit(pav_progress)(values_T, mask_S)
  np.testing.assert_allclose(progress, [[0.3, -0.1, 0.6, 0.0], [-0.5, 0, 0, 0]], atol=1e-6)
  # RL: outcome at the last real step plus α · progress.
  base = jax.jit(outcome_step_rewards)(np.array([1.0, 0.0]), mask_S)
  np.testing.assert_array_equal(base, [[0, 0, 1, 0], [0, 0, 0, 0]])
  rewards = jax.jit(pav_rewards)(base, progress, alpha=0.5, step_mask_S=mask_S)
  np.testing.assert_allclose(rewards, [[0.15, -0.05, 1.3, 0.0], [-0.25, 0, 0, 0]], atol=1e-6)
  # The progress terms telescope: Σ_h A^μ = Q^μ(end) − Q^μ(start).
  np.testing.assert_allclose(np.sum(progress, -1), [0.8, -0.5], atol=1e-6)


# --- implicit PRM ------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("mode",))
def implicit_fn(log_ratio_L, mask_L, step_end_S, step_mask_S, beta, mode="single"):
  return implicit_prm_step_rewards(
    log_ratio_L, mask_L, step_end_S, beta=beta, step_mask_S=step_mask_S, mode=mode
  )


def test_implicit_prm_worked_example():
  # β = 0.05, log-ratios [0.2, −0.1, 0.4, 0.0], steps end at tokens 1 and 3 → q = [0.01, 0.005, 0.025, 0.025],
  # step rewards [0.005, 0.02]; r_θ(y) = 0.025 gives the CE loss 0.680725 (label 1) and 0.705725 (label 0).
  log_ratio = np.array([0.2, -0.1, 0.4, 0.0], np.float32)
  mask = np.ones(4)
  q = jax.jit(functools.partial(implicit_prm_q, beta=0.05))(log_ratio, mask)
  np.testing.assert_allclose(q, [0.01, 0.005, 0.025, 0.025], atol=1e-7)
  ends, steps = np.array([1, 3]), np.ones(2)
  np.testing.assert_allclose(implicit_fn(log_ratio, mask, ends, steps, 0.05), [0.005, 0.02], atol=1e-7)
  np.testing.assert_allclose(
    implicit_fn(log_ratio, mask, ends, steps, 0.05, mode="accumulative"), [0.005, 0.025], atol=1e-7
  )
  r = float(q[-1])
  assert -np.log(1 / (1 + np.exp(-r))) == pytest.approx(0.680725, abs=1e-6)
  assert -np.log(1 - 1 / (1 + np.exp(-r))) == pytest.approx(0.705725, abs=1e-6)


def test_implicit_prm_masks_padding_and_properties():
  rng = np.random.default_rng(2)
  log_ratio = rng.normal(size=(3, 8)).astype(np.float32)
  mask = np.zeros((3, 8))
  mask[:, 2:7] = 1  # prompt tokens 0–1 and padding 7 do not count
  ends = np.array([[3, 5, 6], [2, 6, 6], [6, 0, 0]])
  steps = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
  beta = 0.1
  got = np.asarray(implicit_fn(log_ratio, mask, ends, steps, beta))
  for b in range(3):
    prev = 1
    for k in range(3):
      if steps[b, k]:
        expected = beta * sum(log_ratio[b, t] * mask[b, t] for t in range(prev + 1, ends[b, k] + 1))
        assert got[b, k] == pytest.approx(expected, abs=1e-6)
        prev = ends[b, k]
      else:
        assert got[b, k] == 0.0
  # Single-step rewards sum to the outcome reward r_θ(y) = β Σ_t log-ratio_t over completion tokens.
  np.testing.assert_allclose(got.sum(-1), beta * (log_ratio * mask).sum(-1), atol=1e-6)
  # Token-level form (every token a step): the rewards are β · log-ratio.
  token_ends = np.tile(np.arange(8), (3, 1))
  got = implicit_fn(log_ratio, mask, token_ends, np.ones((3, 8)), beta)
  np.testing.assert_allclose(got, beta * log_ratio * mask, atol=1e-6)
  with pytest.raises(ValueError, match="mode"):
    implicit_prm_step_rewards(log_ratio, mask, ends, beta=beta, mode="mean")


def test_outcome_step_rewards():
  got = jax.jit(outcome_step_rewards)(np.array([1.0, 0.5, 2.0]), np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]]))
  np.testing.assert_array_equal(got, [[0, 0, 1], [0.5, 0, 0], [0, 0, 0]])
