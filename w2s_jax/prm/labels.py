"""Step labels for process reward models from Monte Carlo values: Math-Shepherd and OmegaPRM.

A solution is split into steps at boundary tokens (`step_end_indices`, e.g. the newline that ends a
reasoning line; the last token closes the last step). The Monte Carlo value of step i is the share of K
completions, sampled by the policy from the prefix that ends with step i, whose final answer the task's
scorer accepts (`w2s_jax.prm.mc` draws them). Three labellers:

* `mc_hard` / `mc_soft` — Math-Shepherd (Wang et al. 2023, https://arxiv.org/abs/2312.08935): K completions
  from every step prefix; hard label 1 if any reaches the answer, soft label the success fraction
  (`advantages.math_shepherd_labels`).
* `omega` — OmegaPRM's binary search for the first error (Luo et al. 2024, https://arxiv.org/abs/2406.06592,
  formulas.md §4): on a wrong solution, estimate the MC value of the midpoint prefix; if it is 0 the first
  error is at or before it (search the left half), else after it (search the right half). It needs
  O(log S) MC estimates instead of S; steps before the first error are labelled 1, the first error 0,
  later steps are left unlabelled (`advantages.first_error_labels`). A correct solution needs no search:
  each of its prefixes reaches the answer (the solution itself), so all its steps are 1.

The final step of a solution holds its answer, so its value is the solution's own outcome and is never
sampled. The MC estimator is an argument (`mc_fn(queries) -> correct [Q, K]`), so the labelling logic runs
unchanged with real rollouts or with a deterministic value function in tests.

Legend: R solutions, S steps, K completions per queried prefix, Q queried prefixes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from w2s_jax.advantages.process import first_error_labels, math_shepherd_labels
from w2s_jax.rl.batch import step_index

METHODS = ("mc_hard", "mc_soft", "omega")

# (solution row, step index) -> the K completions' correctness from the prefix ending with that step.
McFn = Callable[[Sequence[tuple[int, int]]], np.ndarray]


def step_end_indices(completion_ids: Sequence[int], boundary_ids: Sequence[int]) -> np.ndarray:
  """Index of the last token of every step of a completion.

  The last token of each step of `w2s_jax.rl.batch.step_index` (the one segmentation rule): a step ends at
  each boundary token (kept as the step's last token); the completion's last token ends the final step
  when it is not a boundary itself.

  Args:
    completion_ids: the generated token ids (stop token included, no padding).
    boundary_ids: tokens that end a step.

  Returns:
    int32 [S] increasing indices into `completion_ids` (empty for an empty completion).
  """
  step_N = step_index(np.asarray(completion_ids, np.int64)[None], np.ones((1, len(completion_ids)), bool),
                      tuple(boundary_ids))[0]
  # The last token of a step: the next token is of a later step, or there is none.
  return np.flatnonzero(np.diff(step_N, append=step_N[-1:] + 1) != 0).astype(np.int32)


def first_error_search(num_steps: int) -> Generator[int, float, int]:
  """OmegaPRM's binary search for the first step whose MC value is 0, as a coroutine.

  The solution is known to be wrong, so its last step (which states the answer) has value 0 and is the
  first error unless an earlier one is found. Yields the step whose prefix value is needed next and
  receives that value; returns the first error e. If values are monotone (> 0 before e, 0 from e on)
  e is exact; otherwise e is a step with value 0 whose predecessor has value > 0 (or e = 0), found with
  at most ⌊log2(num_steps − 1)⌋ + 1 values.

  Args:
    num_steps: S ≥ 1.
  """
  if num_steps < 1:
    raise ValueError(f"first_error_search needs num_steps >= 1, got {num_steps}")
  lo, hi, first = 0, num_steps - 2, num_steps - 1
  while lo <= hi:
    mid = (lo + hi) // 2
    value = yield mid
    if value <= 0.0:
      first, hi = mid, mid - 1
    else:
      lo = mid + 1
  return first


def binary_search_first_error(
  value_fn: Callable[[int], float], num_steps: int
) -> tuple[int, dict[int, float]]:
  """Runs `first_error_search` on one wrong solution with a value function.

  Args:
    value_fn: step index i -> MC value of the prefix ending with step i.
    num_steps: S.

  Returns:
    (first error e, {queried step: value}).
  """
  return run_searches([num_steps], lambda queries: [value_fn(i) for _, i in queries])[0]


def run_searches(
  num_steps: Sequence[int], batch_value_fn: Callable[[list[tuple[int, int]]], Sequence[float]]
) -> list[tuple[int, dict[int, float]]]:
  """Runs one `first_error_search` per solution in lockstep: one batched value call per round.

  Args:
    num_steps: S of each searched solution.
    batch_value_fn: [(search index, step)] -> value of each, in order.

  Returns:
    (first error, {queried step: value}) per search.
  """
  searches = [first_error_search(n) for n in num_steps]
  results: list[Any] = [None] * len(searches)
  calls: list[dict[int, float]] = [{} for _ in searches]
  pending: dict[int, int] = {}
  for j, s in enumerate(searches):
    try:
      pending[j] = next(s)
    except StopIteration as stop:
      results[j] = stop.value
  while pending:
    queries = sorted(pending.items())
    values = list(batch_value_fn(queries))
    if len(values) != len(queries):
      raise ValueError(f"batch_value_fn returned {len(values)} values for {len(queries)} queries")
    pending = {}
    for (j, step), v in zip(queries, values):
      calls[j][step] = float(v)
      try:
        pending[j] = searches[j].send(float(v))
      except StopIteration as stop:
        results[j] = stop.value
  return [(int(r), c) for r, c in zip(results, calls)]


def label_solutions(
  method: str, outcomes_R: np.ndarray, num_steps_R: Sequence[int], mc_fn: McFn, k: int
) -> list[dict[str, Any]]:
  """Step labels of R solutions by `method` (see the module docstring).

  Args:
    method: one of `METHODS`.
    outcomes_R: 1 where the solution's own answer is correct [R].
    num_steps_R: steps of each solution (≥ 1).
    mc_fn: [(row, step)] -> correct [Q, K] (K completions from each prefix; 1 = correct answer).
    k: K, the completions per prefix `mc_fn` draws.

  Returns:
    per solution: `labels` and `label_mask` (lists of S floats / bools), `mc` ({step: [K correct]}, the
    values that were sampled), `first_error` (omega: the step found, S when none; else None).
  """
  if method not in METHODS:
    raise ValueError(f"unknown label method {method!r}; choose one of {METHODS}")
  outcomes_R = np.asarray(outcomes_R, np.float32)
  if any(n < 1 for n in num_steps_R):
    raise ValueError("every solution needs at least one step")
  R = len(num_steps_R)
  mc: list[dict[int, list[float]]] = [{} for _ in range(R)]

  def sample(queries: list[tuple[int, int]]) -> np.ndarray:
    if not queries:
      return np.zeros((0, k), np.float32)
    correct = np.asarray(mc_fn(queries), np.float32)
    if correct.shape != (len(queries), k):
      raise ValueError(f"mc_fn returned shape {correct.shape}, expected {(len(queries), k)}")
    for (r, i), row in zip(queries, correct):
      mc[r][i] = [float(x) for x in row]
    return correct

  out = []
  if method in ("mc_hard", "mc_soft"):
    sample([(r, i) for r in range(R) for i in range(num_steps_R[r] - 1)])
    for r in range(R):
      n = num_steps_R[r]
      correct_SK = np.array([mc[r][i] for i in range(n - 1)] + [[outcomes_R[r]] * k], np.float32)
      hard_S, soft_S = math_shepherd_labels(correct_SK)
      labels = np.asarray(hard_S if method == "mc_hard" else soft_S)
      out.append({"labels": [float(x) for x in labels], "label_mask": [True] * n, "mc": mc[r],
                  "first_error": None})
    return out
  wrong = [r for r in range(R) if outcomes_R[r] < 1.0]
  found = run_searches(
    [num_steps_R[r] for r in wrong],
    lambda queries: sample([(wrong[j], i) for j, i in queries]).mean(axis=1),
  )
  first = {r: e for r, (e, _) in zip(wrong, found)}
  for r in range(R):
    n = num_steps_R[r]
    e = first.get(r, n)
    labels, mask = first_error_labels(np.int32(e), np.int32(n), n)
    out.append({"labels": [float(x) for x in np.asarray(labels)],
                "label_mask": [bool(x) for x in np.asarray(mask)], "mc": mc[r], "first_error": int(e)})
  return out


__all__ = [
  "METHODS", "binary_search_first_error", "first_error_search", "label_solutions", "run_searches",
  "step_end_indices",
]
