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

Learned terms from earlier runs' folders (`w2s_jax.rewards.learned`), each weighted and logged alike:
- `model`: a reward model's score (`model_workdir`, `model_coef` 1).
- `prm`: a PRM's solution score, min/last/prod/mean of its step probabilities (`prm_workdir`,
  `prm_coef` 1, `prm_reduce` "min").
- `pav`: Σ_h PAV progress Q^μ(s_{h+1}) − Q^μ(s_h), Q^μ a PRM's probabilities (`process = "pav"`,
  `process_workdir`, `process_coef` 1 = PAV's α).
- `implicit_prm`: Σ_k implicit-PRM step rewards from β log π_θ/π_ref of a DPO-family run
  (`process = "implicit_prm"`, `process_workdir`, `process_coef`, `implicit_prm_beta`, `process_boundary`).

The folder terms (`model`, `prm`, `pav`, `implicit_prm`) load their run once, in `make_reward_config`
(`w2s_jax.rewards.learned`: the newest intact checkpoint; a missing or incompatible one is an error naming
the key and the folder). Process rewards enter as their sum over the completion's steps: the RL loop
takes one reward per completion.

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
    model_workdir: folder of a reward-model run (`configs/reward_model_tiny.py`); "" = off.
    model_coef: weight of its score.
    prm_workdir: folder of a PRM run (`configs/prm_tiny.py`); "" = off.
    prm_coef: weight of the PRM's solution score.
    prm_reduce: how step probabilities make the solution score: min | last | prod | mean.
    process: "" (off), "pav" or "implicit_prm".
    process_workdir: the run behind `process`: a PRM run (pav) or a DPO-family run (implicit_prm).
    process_coef: weight of the process term (PAV's α).
    implicit_prm_beta: β of the implicit PRM; 0 = the DPO run's `loss.beta`.
    process_boundary: text that ends a step for the implicit PRM (PAV uses the PRM's `label.boundary`).
    scorers: the loaded folder terms by name, `fn(problems_R, texts_R, stopped_R) -> [R]`
      (`make_reward_config` fills it).
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
  model_workdir: str = ""
  model_coef: float = 1.0
  prm_workdir: str = ""
  prm_coef: float = 1.0
  prm_reduce: str = "min"
  process: str = ""
  process_workdir: str = ""
  process_coef: float = 1.0
  implicit_prm_beta: float = 0.0
  process_boundary: str = "\n"
  scorers: dict[str, Callable[..., np.ndarray]] | None = None


COEFS = {"model": "model_coef", "prm": "prm_coef", "pav": "process_coef", "implicit_prm": "process_coef"}


def _folder_term(name: str, fn: Callable[..., np.ndarray], problems_R, texts_R, stopped_R) -> np.ndarray:
  values_R = np.asarray(fn(list(problems_R), list(texts_R), np.asarray(stopped_R, bool)), np.float32)
  if values_R.shape != (len(texts_R),) or not np.all(np.isfinite(values_R)):
    raise ValueError(f"the reward term {name!r} gave shape {values_R.shape} (want ({len(texts_R)},)) or "
                     "non-finite values")
  return values_R


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
  if cfg.scorers is None and (cfg.model_workdir or cfg.prm_workdir or cfg.process):
    raise ValueError("reward.model_workdir / prm_workdir / process need their runs loaded: build the "
                     "RewardConfig with make_reward_config")
  for name, fn in (cfg.scorers or {}).items():
    terms[name] = getattr(cfg, COEFS[name]) * _folder_term(name, fn, problems_R, texts_R, stopped_R)
  return {k: np.asarray(v, np.float32) for k, v in terms.items()}
