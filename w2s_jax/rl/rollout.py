"""Rollouts: prompts → G samples per prompt → verifiable rewards, as host (NumPy) arrays.

A rollout of B prompts holds R = B·G rows in group-major order (row b·G + g is sample g of prompt b), in
the sampler's slot layout: `tokens_RS` is the left-padded prompt (P slots) followed by the completion
(N = max_new_tokens slots). Per-token arrays of the completion are [R, N]: slot P + n holds completion
token n, and `logp_RN[:, n]` is its log-prob.

Rewards (`RewardConfig`, `w2s_jax.rewards.compose`): named terms from the config — correctness of the
answer extracted in the task's format (`reasoning.grade`: tolerance-free, partial credit is not correct),
the scorer's partial credit, a format term, DAPO's overlong shaping, a length penalty, a user term and a
learned reward — each kept per row in `Rollout.reward_terms`; the reward is their sum.

Legend: B prompts, G samples per prompt, R = B·G rows, P prompt slots, N completion slots, S = P + N.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from w2s_jax.data import chat, reasoning
from w2s_jax.data.limits import LengthLimitError
from w2s_jax.data.sft_sources import reasoning_prompt
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.losses.policy import dynamic_sampling_mask
from w2s_jax.rewards.compose import RewardConfig, reward_terms
from w2s_jax.sampling.sampler import STOPPED, TRUNCATED, Sampler, left_pad

__all__ = ["RewardConfig", "PromptSet", "Rollout", "encode_prompts", "score_rows", "sample_groups",
           "collect_groups", "concat_rollouts", "decode_completions"]


@dataclasses.dataclass
class PromptSet:
  """Problems with their left-padded prompt tokens.

  Attributes:
    problems: the problems, row i of the arrays is problem i.
    tokens_BP: int32 left-padded prompt tokens (BOS + `Question: …\\nSolution:\\n`).
    mask_BP: bool, the real prompt tokens.
    dropped: problems left out because their prompt did not fit in P slots.
  """

  problems: list[reasoning.Problem]
  tokens_BP: np.ndarray
  mask_BP: np.ndarray
  dropped: int = 0

  def take(self, indices: Sequence[int]) -> PromptSet:
    idx = np.asarray(indices, np.int64)
    return PromptSet([self.problems[i] for i in idx], self.tokens_BP[idx], self.mask_BP[idx])


def encode_prompts(
  problems: Sequence[reasoning.Problem], tokenizer: Tokenizer, prompt_len: int, *, on_long: str = "skip",
  key: str = "data.max_prompt_len", chat_template: str | None = None,
) -> PromptSet:
  """Tokenizes `[BOS] + reasoning_prompt(problem)` (the SFT prompt) and left-pads to `prompt_len`.

  With `chat_template` (a Jinja string, `data.chat_template` resolved by `chat.resolve_template`) the
  prompt is the question as the user turn up to the assistant header (`chat.render_prompt`), as in SFT.

  A prompt needing more than `prompt_len` tokens is an error naming `key`, the longest prompt and how
  many are too long (`on_long="error"`), or is left out and counted in `dropped` (`on_long="skip"`); if
  none fit, it is an error either way.
  """
  if on_long not in ("error", "skip"):
    raise ValueError(f"on_long must be 'error' or 'skip', got {on_long!r}")
  kept, seqs, longest = [], [], 0
  for p in problems:
    text = chat.render_prompt(chat_template, tokenizer, p.prompt) if chat_template else reasoning_prompt(p)
    ids = [tokenizer.bos_id, *tokenizer.encode(text)]
    longest = max(longest, len(ids))
    if len(ids) <= prompt_len:
      kept.append(p)
      seqs.append(ids)
  too_long = len(problems) - len(kept)
  if too_long and (on_long == "error" or not kept):
    hint = "or set data.long_prompts='skip' to skip and count them" if kept else "no prompt fits"
    raise LengthLimitError(key, prompt_len, longest, too_long, len(problems), "prompts (BOS included)", hint)
  tokens, mask = left_pad(seqs, pad_id=tokenizer.pad_id, length=prompt_len)
  return PromptSet(kept, tokens, mask, dropped=too_long)


@dataclasses.dataclass
class Rollout:
  """G samples of each of B prompts with their rewards (all NumPy, rows group-major).

  Attributes:
    problems: the B problems.
    group_size: G.
    tokens_RS: int32 prompt + completion + padding.
    mask_RS: bool, real tokens (prompt and completion).
    completion_mask_RN: bool, generated tokens (stop token included).
    sampler_logp_RN: float32 log-probs the sampler drew the tokens with.
    texts: decoded completions [R].
    answers: the stated answers (extracted in the task's format) [R], None when none was stated.
    correct_R: float32, 1 where the extracted answer is correct (`reasoning.grade`), else 0.
    format_R: float32, 1 where an answer was stated and the row stopped.
    truncated_R: bool, rows cut by the length limit.
    rewards_R: float32 total reward (`RewardConfig`).
    reward_terms: the weighted reward terms by name, float32 [R] each (they sum to `rewards_R`).
    credit_R: float32, the scorer's partial credit (raw; `reasoning.Grade.credit`).
  """

  problems: list[reasoning.Problem]
  group_size: int
  tokens_RS: np.ndarray
  mask_RS: np.ndarray
  completion_mask_RN: np.ndarray
  sampler_logp_RN: np.ndarray
  texts: list[str]
  answers: list[str | None]
  correct_R: np.ndarray
  format_R: np.ndarray
  truncated_R: np.ndarray
  rewards_R: np.ndarray
  reward_terms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  credit_R: np.ndarray | None = None

  @property
  def lengths_R(self) -> np.ndarray:
    return self.completion_mask_RN.sum(axis=1)

  def select_groups(self, groups: Sequence[int]) -> Rollout:
    """The rollout restricted to the given prompt indices (whole groups, in that order)."""
    G = self.group_size
    rows = np.asarray([b * G + g for b in groups for g in range(G)], np.int64)
    pick = lambda x: x[rows]
    return dataclasses.replace(
      self, problems=[self.problems[b] for b in groups], tokens_RS=pick(self.tokens_RS),
      mask_RS=pick(self.mask_RS), completion_mask_RN=pick(self.completion_mask_RN),
      sampler_logp_RN=pick(self.sampler_logp_RN), texts=[self.texts[r] for r in rows],
      answers=[self.answers[r] for r in rows], correct_R=pick(self.correct_R),
      format_R=pick(self.format_R), truncated_R=pick(self.truncated_R), rewards_R=pick(self.rewards_R),
      reward_terms={k: pick(v) for k, v in self.reward_terms.items()},
      credit_R=None if self.credit_R is None else pick(self.credit_R),
    )


def concat_rollouts(parts: Sequence[Rollout]) -> Rollout:
  """Rollouts of the same G and shapes, one after the other."""
  if not parts:
    raise ValueError("concat_rollouts needs at least one rollout")
  cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
  lists = lambda name: [x for p in parts for x in getattr(p, name)]
  return Rollout(
    problems=lists("problems"), group_size=parts[0].group_size, tokens_RS=cat("tokens_RS"),
    mask_RS=cat("mask_RS"), completion_mask_RN=cat("completion_mask_RN"),
    sampler_logp_RN=cat("sampler_logp_RN"), texts=lists("texts"), answers=lists("answers"),
    correct_R=cat("correct_R"), format_R=cat("format_R"), truncated_R=cat("truncated_R"),
    rewards_R=cat("rewards_R"),
    reward_terms={k: np.concatenate([p.reward_terms[k] for p in parts]) for k in parts[0].reward_terms},
    credit_R=None if any(p.credit_R is None for p in parts) else cat("credit_R"),
  )


def decode_completions(
  tokens_RN: np.ndarray, completion_mask_RN: np.ndarray, tokenizer: Tokenizer
) -> list[str]:
  """Completion texts; special tokens (the stop token among them) are dropped by `tokenizer.decode`.

  A model whose vocabulary is larger than the tokenizer's can draw ids the tokenizer does not have;
  each such id becomes U+FFFD (the replacement character), so the text shows it and cannot be scored
  as a clean answer.
  """
  texts = []
  for row, m in zip(tokens_RN, completion_mask_RN):
    ids = [int(t) for t in row[m]]
    pieces, run = [], []
    for i in ids:
      if i < tokenizer.vocab_size:
        run.append(i)
      else:
        pieces += [tokenizer.decode(run), "\ufffd"]
        run = []
    texts.append("".join([*pieces, tokenizer.decode(run)]))
  return texts


def score_rows(
  problems: Sequence[reasoning.Problem], texts: Sequence[str], stopped_R: np.ndarray, group_size: int,
  lengths_R: np.ndarray, max_new_tokens: int, cfg: RewardConfig,
) -> dict[str, Any]:
  """Rewards of R = len(problems)·G completions (row r belongs to problem r // G).

  Returns:
    dict with `answers` (list), `correct_R`, `format_R`, `credit_R` and `rewards_R` (float32 arrays) and
    `reward_terms` (name → weighted float32 [R]; see `w2s_jax.rewards.compose`).
  """
  if len(texts) != len(problems) * group_size:
    raise ValueError(f"{len(texts)} completions for {len(problems)} problems × G={group_size}")
  problems_R = [problems[r // group_size] for r in range(len(texts))]
  grades = [reasoning.grade(p, t) for p, t in zip(problems_R, texts)]
  terms = reward_terms(problems_R, texts, grades, stopped_R, lengths_R, max_new_tokens, cfg)
  answers = [g.answer for g in grades]
  format_R = np.array([a is not None for a in answers], np.float32) * np.asarray(stopped_R, np.float32)
  return {"answers": answers, "correct_R": np.array([g.correct for g in grades], np.float32),
          "format_R": format_R, "credit_R": np.array([g.credit for g in grades], np.float32),
          "rewards_R": np.sum(list(terms.values()), axis=0).astype(np.float32), "reward_terms": terms}


def sample_groups(
  sampler: Sampler, params: Any, prompts: PromptSet, group_size: int, key: jax.Array,
  tokenizer: Tokenizer, reward_cfg: RewardConfig, *, compact: bool = True,
) -> Rollout:
  """Draws G completions per prompt with `sampler` and scores them.

  Args:
    sampler: a `Sampler` of the policy (its config fixes N, temperature and the stop tokens).
    params: the policy's params.
    prompts: B prompts.
    group_size: G.
    key: the draw's PRNG key.
    tokenizer: decodes completions.
    reward_cfg: the reward's terms.
    compact: stop computing rows that have finished (`Sampler.decode(compact=True)`): the same tokens,
      log-probs up to float summation order.

  Returns:
    a `Rollout` of B·G rows.
  """
  tokens_RP = np.repeat(prompts.tokens_BP, group_size, axis=0)
  mask_RP = np.repeat(prompts.mask_BP, group_size, axis=0)
  out = jax.device_get(sampler(params, tokens_RP, mask_RP, key, compact=compact))
  P = prompts.tokens_BP.shape[1]
  completion_mask_RN = np.asarray(out.completion_mask_BS)[:, P:]
  texts = decode_completions(np.asarray(out.tokens_BS)[:, P:], completion_mask_RN, tokenizer)
  status_R = np.asarray(out.status_B)
  scores = score_rows(prompts.problems, texts, status_R == STOPPED, group_size,
                      completion_mask_RN.sum(axis=1), sampler.cfg.max_new_tokens, reward_cfg)
  return Rollout(
    problems=list(prompts.problems), group_size=group_size, tokens_RS=np.asarray(out.tokens_BS),
    mask_RS=np.asarray(out.mask_BS), completion_mask_RN=completion_mask_RN,
    sampler_logp_RN=np.asarray(out.logprobs_BS)[:, P:].astype(np.float32), texts=texts,
    answers=scores["answers"], correct_R=scores["correct_R"], format_R=scores["format_R"],
    truncated_R=status_R == TRUNCATED, rewards_R=scores["rewards_R"], reward_terms=scores["reward_terms"],
    credit_R=scores["credit_R"],
  )


FILTER_METRICS = ("correct", "reward")


def collect_groups(
  draw: Callable[[int], Rollout], num_groups: int, *, dynamic: bool = False, max_rounds: int = 1,
  metric: str = "correct",
) -> tuple[Rollout, np.ndarray, dict[str, Any]]:
  """One iteration's groups, with DAPO dynamic sampling (Yu et al. 2025; verl `filter_groups`).

  `draw(round)` samples a fresh rollout of `num_groups` prompts. Without `dynamic`, the first draw is the
  batch. With it, groups whose `metric` ("correct": the task score, verl's `acc`; "reward": the total
  reward) is equal across all G samples are dropped (`dynamic_sampling_mask`: they carry no GRPO
  signal), and further draws refill the batch until `num_groups` groups are kept or `max_rounds` draws
  were made. The batch is the first `num_groups` kept groups (in draw order); if too few were kept it is
  topped up with dropped groups marked as padding (`real_B` False), which the loop masks out.

  Returns:
    (rollout of `num_groups` groups, real_B bool [num_groups], stats) with stats `first` (the first
    draw, an unfiltered sample for reporting), `rounds` (draws made) and `groups_kept_frac`.
  """
  if metric not in FILTER_METRICS:
    raise ValueError(f"dynamic_sampling.metric must be one of {FILTER_METRICS}, got {metric!r}")
  pool: list[Rollout] = []
  while True:
    pool.append(draw(len(pool)))
    rollout = concat_rollouts(pool)
    if not dynamic:
      keep_B = np.ones(len(rollout.problems), bool)
      break
    values_R = rollout.correct_R if metric == "correct" else rollout.rewards_R
    keep_B = np.asarray(dynamic_sampling_mask(values_R.reshape(-1, rollout.group_size)))
    if keep_B.sum() >= num_groups or len(pool) >= max_rounds:
      break
  kept = np.flatnonzero(keep_B)[:num_groups]
  filler = np.flatnonzero(~keep_B)[: num_groups - len(kept)]
  real_B = np.arange(num_groups) < len(kept)
  stats = {"first": pool[0], "rounds": len(pool), "groups_kept_frac": float(keep_B.mean())}
  return rollout.select_groups([int(g) for g in np.concatenate([kept, filler])]), real_B, stats
