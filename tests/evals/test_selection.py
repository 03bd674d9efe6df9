"""Best-of-N, votes and self-certainty against hand-computed values."""

import numpy as np
import pytest

from w2s_jax.evals.selection import best_of_n, borda_vote, self_certainty, weighted_vote


def test_self_certainty_matches_numpy_and_is_zero_for_uniform():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 9)) * 2
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  per_tok = -np.mean(np.log(9 * np.exp(logp)), -1)
  want = [(per_tok[0, :3]).mean(), per_tok[1, 0], 0.0]
  np.testing.assert_allclose(np.asarray(self_certainty(logits, mask)), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(self_certainty(np.zeros((1, 2, 5)), np.ones((1, 2)))), [0.0],
                             atol=1e-6)
  peaked = np.zeros((1, 1, 5))
  peaked[..., 0] = 10.0
  assert float(self_certainty(peaked, np.ones((1, 1)))[0]) > 1.0


def test_best_of_n_skips_invalid_and_breaks_ties_first():
  assert best_of_n(np.array([0.1, 0.9, 0.9, 0.3])) == 1
  assert best_of_n(np.array([0.1, 0.9, 0.5]), np.array([1, 0, 1])) == 2
  with pytest.raises(ValueError, match="no valid"):
    best_of_n(np.array([1.0]), np.array([0]))


def test_votes():
  answers = ["7", "3", "3", None, "7", "7"]
  assert weighted_vote(answers) == "7"
  assert weighted_vote(answers, np.array([0.1, 0.9, 0.9, 5.0, 0.1, 0.1])) == "3"  # 1.8 vs 0.3
  assert weighted_vote(["a", "b"]) == "a"
  with pytest.raises(ValueError, match="None"):
    weighted_vote([None, None])
  # Borda with power 1: scores rank b(3 pts) a(2) c(1) -> a 2, b 3, c 1 -> "b"; power 0 is majority.
  assert borda_vote(["a", "b", "c"], np.array([0.5, 0.9, 0.1]), power=1.0) == "b"
  assert borda_vote(["a", "b", "a"], np.array([0.1, 0.9, 0.2]), power=0.0) == "a"
  # a: ranks 2,3 -> 2+1=3 points, b: rank 1 -> 3 points: tie, first seen ("a") wins.
  assert borda_vote(["a", "b", "a"], np.array([0.5, 0.9, 0.1]), power=1.0) == "a"
