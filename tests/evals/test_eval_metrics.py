"""Eval metrics against hand-computed values and brute-force references."""

import itertools
import math

import numpy as np
import pytest

from w2s_jax.evals import accuracy, auroc, bootstrap_ci, maj_at_k, majority_vote, pass_at_k
from w2s_jax.w2s import median_pgr, pgr


@pytest.mark.parametrize("k,expected", [(1, 0.3), (5, 1 - 21 / 252), (8, 1.0)])
def test_pass_at_k_worked_example(k, expected):
  assert pass_at_k(10, 3, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_exhaustive_enumeration():
  for n, c, k in [(6, 2, 3), (7, 0, 2), (5, 5, 1), (8, 3, 4)]:
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    brute = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
  with pytest.raises(ValueError):
    pass_at_k(3, 4, 1)


def test_majority_vote_and_maj_at_k():
  assert maj_at_k([12, 7, 12, 9, 7, 12], 12, 6) == 1.0
  assert majority_vote([7, 9, 9, 7]) == 7  # tie: first seen
  assert majority_vote([None, None, 3]) == 3 and majority_vote([None]) is None
  assert maj_at_k([1, 2, 2, 1, 1], 2, 3) == 1.0 and maj_at_k([1, 2, 2, 1, 1], 2, 5) == 0.0


def test_auroc_matches_pair_counting():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, size=40).astype(float)  # many ties
  labels = rng.integers(0, 2, size=40)
  pos, neg = scores[labels == 1], scores[labels == 0]
  brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
  assert auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
  assert auroc([0.1, 0.9], [0, 1]) == 1.0
  with pytest.raises(ValueError, match="positive"):
    auroc([0.1, 0.2], [0, 0])


def test_accuracy():
  assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_pgr_worked_example_and_degenerate_pairs():
  assert pgr(0.60, 0.80, 0.70) == pytest.approx(0.5, abs=1e-12)
  assert pgr(0.6, 0.8, 0.8) == pytest.approx(1.0) and pgr(0.6, 0.8, 0.6) == 0.0
  assert math.isnan(pgr(0.7, 0.7, 0.75))
  med, dropped = median_pgr([0.6, 0.6, 0.7, 0.5], [0.8, 0.7, 0.7, 0.9], [0.7, 0.7, 0.75, 0.9])
  assert dropped == 1 and med == pytest.approx(1.0)  # values 0.5, 1.0, 1.0


def test_bootstrap_ci_brackets_the_statistic_and_narrows_with_data():
  rng = np.random.default_rng(1)
  small = rng.normal(size=10)
  big = rng.normal(size=400)
  s, lo, hi = bootstrap_ci(small, np.mean, n_resamples=2000)
  assert lo <= s <= hi and s == pytest.approx(small.mean())
  _, lo2, hi2 = bootstrap_ci(big, np.mean, n_resamples=2000)
  assert (hi2 - lo2) < (hi - lo)
  # 95 % CI of a mean of 400 N(0,1) draws is about ±1.96/20
  assert hi2 - lo2 == pytest.approx(2 * 1.96 / 20, rel=0.2)
