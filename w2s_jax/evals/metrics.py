"""Evaluation metrics: accuracy, AUROC, unbiased pass@k, maj@k and bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from w2s_jax.evals.selection import weighted_vote


def accuracy(probs_NC: np.ndarray, labels_N: np.ndarray) -> float:
  """Share of rows whose argmax class equals the integer label."""
  return float(np.mean(np.argmax(np.asarray(probs_NC), axis=-1) == np.asarray(labels_N)))


def auroc(scores_N: np.ndarray, labels_N: np.ndarray) -> float:
  """Area under the ROC curve of scores for binary labels (Mann–Whitney U; ties count 1/2)."""
  scores_N = np.asarray(scores_N, np.float64)
  labels_N = np.asarray(labels_N).astype(bool)
  pos, neg = scores_N[labels_N], scores_N[~labels_N]
  if len(pos) == 0 or len(neg) == 0:
    raise ValueError("AUROC needs at least one positive and one negative label")
  order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
  values = np.concatenate([pos, neg])[order]
  ranks = np.empty(len(values))
  i = 0
  while i < len(values):  # average ranks over ties
    j = i
    while j + 1 < len(values) and values[j + 1] == values[i]:
      j += 1
    ranks[i:j + 1] = (i + j) / 2 + 1
    i = j + 1
  rank_of = np.empty(len(values))
  rank_of[order] = ranks
  u = rank_of[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
  return float(u / (len(pos) * len(neg)))


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one problem (Chen et al. 2021): 1 − C(n−c, k)/C(n, k), in its stable form.

  Args:
    n: samples drawn.
    c: samples that were correct.
    k: budget, 1 ≤ k ≤ n.
  """
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: Sequence[Hashable]) -> Hashable:
  """Most frequent answer; ties go to the answer seen first. None answers (unparsed) never win
  unless every answer is None."""
  if all(a is None for a in answers):
    return None
  return weighted_vote(answers)  # equal weights


def maj_at_k(answers: Sequence[Hashable], gold: Hashable, k: int) -> float:
  """1.0 if the majority of the first k answers equals gold, else 0.0."""
  if not 1 <= k <= len(answers):
    raise ValueError(f"k={k} must be in [1, {len(answers)}]")
  return float(majority_vote(answers[:k]) == gold)


def bootstrap_ci(
  values: Sequence[float],
  statistic: Callable[[np.ndarray], float] = np.median,
  *,
  level: float = 0.95,
  n_resamples: int = 10_000,
  seed: int = 0,
) -> tuple[float, float, float]:
  """(statistic, low, high): the statistic of `values` and its percentile bootstrap CI."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    raise ValueError("bootstrap_ci needs at least one value")
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
  stats = np.apply_along_axis(statistic, 1, values[idx])
  alpha = (1 - level) / 2
  return float(statistic(values)), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
