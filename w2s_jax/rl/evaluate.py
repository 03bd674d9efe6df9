"""Held-out evaluation during RL: pass@1, unbiased pass@k and maj@k from n samples per problem.

pass@k is Chen et al.'s unbiased estimator 1 − C(n−c, k)/C(n, k) averaged over problems
(`w2s_jax.evals.pass_at_k`); pass@1 = mean c/n. maj@k votes over the stated answers of the first k
samples (ties: first seen; unparsed answers never win) and scores the winner with the task's scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from w2s_jax.data import reasoning
from w2s_jax.evals.metrics import majority_vote, pass_at_k
from w2s_jax.rl.rollout import PromptSet, RewardConfig, Rollout, concat_rollouts, sample_groups
from w2s_jax.sampling.sampler import Sampler


def sample_eval(
  sampler: Sampler, params: Any, prompts: PromptSet, n: int, key: jax.Array, tokenizer: Any,
  chunk_prompts: int,
) -> Rollout:
  """n samples of every prompt, drawn `chunk_prompts` prompts at a time (one compiled shape).

  The last chunk is padded with the first prompts and the padding rows are dropped.
  """
  if chunk_prompts <= 0:
    raise ValueError(f"chunk_prompts must be positive, got {chunk_prompts}")
  total = len(prompts.problems)
  parts = []
  for c, start in enumerate(range(0, total, chunk_prompts)):
    idx = [(start + i) % total for i in range(chunk_prompts)]
    part = sample_groups(sampler, params, prompts.take(idx), n, jax.random.fold_in(key, c), tokenizer,
                         RewardConfig())
    keep = min(chunk_prompts, total - start)
    parts.append(part.select_groups(list(range(keep))))
  return concat_rollouts(parts)


def pass_maj_metrics(
  problems: Sequence[reasoning.Problem], correct_PN: np.ndarray, answers_PN: Sequence[Sequence[str | None]],
  ks: Sequence[int],
) -> dict[str, float]:
  """pass@k and maj@k over problems from an n-sample correctness matrix.

  Args:
    problems: the P problems.
    correct_PN: task score of sample j of problem i [P, n] (1 = correct).
    answers_PN: the stated answers, same layout (None = no answer).
    ks: budgets (k ≤ n; larger ones are skipped).

  Returns:
    {"pass@k": …, "maj@k": …} for each k, plus "pass@1" and "answered" (share of samples with an answer).
  """
  correct_PN = np.asarray(correct_PN) >= 1.0
  n = correct_PN.shape[1]
  counts = correct_PN.sum(axis=1)
  out = {"pass@1": float(np.mean(counts / n))}
  for k in ks:
    if not 1 <= k <= n:
      continue
    out[f"pass@{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in counts]))
    votes = []
    for p, answers in zip(problems, answers_PN):
      winner = majority_vote(list(answers[:k]))
      votes.append(winner is not None and reasoning.grade_answer(p, winner).correct)
    out[f"maj@{k}"] = float(np.mean(votes))
  out["answered"] = float(np.mean([a is not None for row in answers_PN for a in row]))
  return out


def evaluate(
  sampler: Sampler, params: Any, prompts: PromptSet, n: int, ks: Sequence[int], key: jax.Array,
  tokenizer: Any, chunk_prompts: int,
) -> dict[str, float]:
  """Samples n completions per held-out prompt and returns `pass_maj_metrics` plus the mean length."""
  rollout = sample_eval(sampler, params, prompts, n, key, tokenizer, chunk_prompts)
  P = len(rollout.problems)
  answers = [rollout.answers[i * n : (i + 1) * n] for i in range(P)]
  metrics = pass_maj_metrics(rollout.problems, rollout.correct_R.reshape(P, n), answers, ks)
  metrics["response_len"] = float(np.mean(rollout.lengths_R))
  return metrics
