"""Rewards composed from named terms chosen in the config (`reward` section), each logged on its own.

The reward of a completion is the sum of the active terms (coefficient ≠ 0); every term is one number
per row, and `reward_terms` returns them by name so the RL loop logs each (`reward_<name>` in
`metrics.jsonl`) next to their sum (`reward_mean`).

| term       | value per completion                                            | `reward.` keys             |
|------------|-----------------------------------------------------------------|----------------------------|
| `correct`  | 1 if the extracted answer is correct (`reasoning.grade`), else 0 | `correct_coef` (1.0)      |
| `partial`  | the scorer's partial credit, clipped to [0, 1]                  | `partial_coef` (0)         |
| `format`   | 1 if an answer was stated in the task's format and the row stopped | `format_coef` (0)       |
| `overlong` | DAPO's overlong punishment (`losses.policy.overlong_penalty`)   | `overlong_buffer`, …   |
| `length`   | −(completion tokens) / max_new_tokens                           | `length_coef` (0)          |
| `custom`   | user `fn(problem, completion, answer) -> float`                 | `custom`, `custom_coef` (1) |
| `learned`  | a learned reward passed in code (`train_rl(reward_fn=...)`)     | `learned_coef` (0)         |

`correct` is the verifier's verdict, not its partial credit: some scorers give partial credit a policy
can farm (chain_sum: len(gold)/len(answer) when the gold string occurs in a wrong answer), so partial
credit enters the reward only when asked for (`partial_coef`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from w2s_jax.data import reasoning
from w2s_jax.losses.policy import overlong_penalty
from w2s_jax.references import resolve_reference


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """How a completion is rewarded (see the module docstring for the terms).

  Attributes:
    correct_coef: weight of correctness (1 = the extracted answer is correct).
    format_coef: added when the completion stated an answer and ended with the stop token.
    overlong_buffer: DAPO's L_cache in tokens; 0 turns overlong shaping off. L_max = max_new_tokens.
    overlong_penalty: DAPO's penalty factor (the most a too-long completion loses).
    partial_coef: weight of the scorer's partial credit (clipped to [0, 1]); 0 = off.
    length_coef: weight of −length / max_new_tokens; 0 = off.
    custom: `"module:function"` of a user term `fn(problem, completion, answer) -> float`; "" = off.
    custom_coef: weight of `custom`.
    learned_coef: weight of `learned` (a verifier's or reward model's score); 0 = off.
    learned: `fn(problems_R, texts_R) -> scores [R]`, one score per completion (row r's problem is
      `problems_R[r]`), e.g. a verifier's probability that the completion is correct. Training sees the
      scores; `correct_R` stays the task scorer's, so logs and evaluations show true accuracy.
  """

  correct_coef: float = 1.0
  format_coef: float = 0.0
  overlong_buffer: int = 0
  overlong_penalty: float = 1.0
  partial_coef: float = 0.0
  length_coef: float = 0.0
  custom: str = ""
  custom_coef: float = 1.0
  learned_coef: float = 0.0
  learned: Callable[[Sequence[reasoning.Problem], Sequence[str]], np.ndarray] | None = None


def _custom_term(fn: Callable[..., Any], name: str, problems_R: Sequence[reasoning.Problem],
                 texts_R: Sequence[str], answers_R: Sequence[str | None]) -> np.ndarray:
  values = []
  for r, (p, t, a) in enumerate(zip(problems_R, texts_R, answers_R, strict=True)):
    v = fn(p, t, a)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
      raise ValueError(f"reward.custom={name!r} returned {v!r} for row {r} (problem {p.id}): want a "
                       "finite float")
    values.append(float(v))
  return np.asarray(values, np.float32)


def _learned_term(cfg: RewardConfig, problems_R: Sequence[reasoning.Problem],
                  texts_R: Sequence[str]) -> np.ndarray:
  if cfg.learned is None:
    raise ValueError("reward.learned_coef > 0 needs a learned reward function (train_rl(reward_fn=...))")
  learned_R = np.asarray(cfg.learned(list(problems_R), list(texts_R)), np.float32)
  if learned_R.shape != (len(texts_R),) or not np.all(np.isfinite(learned_R)):
    raise ValueError(f"the learned reward gave shape {learned_R.shape} (want ({len(texts_R)},)) or "
                     "non-finite scores")
  return learned_R


def reward_terms(
  problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str], grades_R: Sequence[reasoning.Grade],
  stopped_R: np.ndarray, lengths_R: np.ndarray, max_new_tokens: int, cfg: RewardConfig,
) -> dict[str, np.ndarray]:
  """The weighted value of every active term, by name (float32 [R] each); their sum is the reward.

  `correct` is always present (its weight may be 0); the others only when their coefficient is non-zero.
  """
  correct_R = np.array([g.correct for g in grades_R], np.float32)
  terms = {"correct": cfg.correct_coef * correct_R}
  if cfg.partial_coef:
    terms["partial"] = cfg.partial_coef * np.clip([g.credit for g in grades_R], 0.0, 1.0)
  if cfg.format_coef:
    stated_R = np.array([g.answer is not None for g in grades_R], np.float32)
    terms["format"] = cfg.format_coef * stated_R * np.asarray(stopped_R, np.float32)
  if cfg.overlong_buffer > 0:
    terms["overlong"] = np.asarray(overlong_penalty(
      np.asarray(lengths_R), max_new_tokens, cfg.overlong_buffer, cfg.overlong_penalty))
  if cfg.length_coef:
    terms["length"] = -cfg.length_coef * np.asarray(lengths_R, np.float32) / max_new_tokens
  if cfg.custom:
    fn = resolve_reference(cfg.custom, "reward.custom")
    terms["custom"] = cfg.custom_coef * _custom_term(fn, cfg.custom, problems_R, texts_R,
                                                     [g.answer for g in grades_R])
  if cfg.learned_coef:
    terms["learned"] = cfg.learned_coef * _learned_term(cfg, problems_R, texts_R)
  return {k: np.asarray(v, np.float32) for k, v in terms.items()}
