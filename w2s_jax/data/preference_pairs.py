"""Preference data from verifiable reasoning tasks: (prompt, chosen, rejected) pairs and unpaired examples.

Two sources, both scored by the task's own reasoning-gym scorer (`reasoning.score`):

- `sampled_records`: several completions per prompt from a model (`sampling.texts.sample_completions`);
  `build_pairs` pairs correct (score >= `correct_at`) with incorrect completions of the same prompt, and
  `build_unpaired` labels every distinct completion (KTO's desirable / undesirable examples).
- `perturbed_records`: the task's worked solution (chosen) against a flawed copy (rejected; `perturb`:
  a wrong final answer, or a solution cut off before its answer); every pair is checked with the scorer.
  For smoke runs and for models too weak to sample a correct solution.

Records (JSONL, one object a line): pairs `{"id", "prompt", "chosen", "rejected", ...}` (the `preference`
shape of `data.jsonl`, plus `problem_id`, `chosen_score`, `rejected_score`); unpaired examples
`{"id", "prompt", "completion", "label"}` with `label` a JSON bool (true = desirable). `read_pairs` /
`read_unpaired` stop at the first bad record with a `jsonl.BadRecordError` naming the file, line and field.
`cached_records` builds a record set once and keeps it in a folder (written atomically).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from w2s_jax.atomic_file import write_atomic
from w2s_jax.data import jsonl, reasoning
from w2s_jax.data.sft_sources import reasoning_prompt

Record = dict[str, Any]
KINDS = ("pairs", "unpaired")


# ------------------------------------------------------------------------------------------------
# Pairs from scored completions.
# ------------------------------------------------------------------------------------------------


def _distinct(completions: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
  """(completion, score) with repeats removed, first occurrence kept, order preserved."""
  if len(completions) != len(scores):
    raise ValueError(f"{len(completions)} completions but {len(scores)} scores")
  seen: dict[str, float] = {}
  for c, s in zip(completions, scores, strict=True):
    if not isinstance(c, str):
      raise TypeError(f"a completion must be a str, got {type(c).__name__}")
    seen.setdefault(c, float(s))
  return list(seen.items())


def build_pairs(
  problem_id: str,
  prompt: str,
  completions: Sequence[str],
  scores: Sequence[float],
  *,
  max_pairs: int,
  correct_at: float = 1.0,
  seed: int = 0,
) -> list[Record]:
  """Pairs of a correct (chosen) and an incorrect (rejected) completion of one prompt.

  Repeated completions count once. With c distinct correct and w distinct incorrect completions, the
  pairs are min(max_pairs, c·w) distinct (chosen, rejected) combinations, drawn so that every correct
  and every incorrect completion is used before any is used twice (round robin over seeded shuffles).

  Args:
    problem_id: id of the problem (pair ids are `<problem_id>/<k>`).
    prompt: the prompt the completions answer.
    completions: sampled completions.
    scores: the scorer's value of each completion.
    max_pairs: most pairs from this prompt.
    correct_at: a completion is correct when its score is >= this.
    seed: shuffling seed.

  Returns:
    Pair records (`id`, `problem_id`, `prompt`, `chosen`, `rejected`, `chosen_score`, `rejected_score`);
    empty when the prompt has no correct or no incorrect completion.
  """
  distinct = _distinct(completions, scores)
  correct = [(c, s) for c, s in distinct if s >= correct_at]
  wrong = [(c, s) for c, s in distinct if s < correct_at]
  rng = random.Random(f"{seed}/{problem_id}")
  rng.shuffle(correct)
  rng.shuffle(wrong)
  n = min(max_pairs, len(correct) * len(wrong))
  # Combination k = (k mod c, (k + ⌊k / lcm(c, w)⌋) mod w): the first lcm(c, w) are the pairs (a, b)
  # with a ≡ b (mod gcd(c, w)), each later block of lcm(c, w) shifts b by one residue class, so k < c·w
  # lists every combination once, and the first max(c, w) use every completion of both sides.
  c, w = len(correct), len(wrong)
  period = math.lcm(c, w) if c and w else 1
  combos = [(k % c, (k + k // period) % w) for k in range(c * w)]
  out = []
  for k, (i, j) in enumerate(combos[:n]):
    out.append({
      "id": f"{problem_id}/{k}", "problem_id": problem_id, "prompt": prompt,
      "chosen": correct[i][0], "rejected": wrong[j][0],
      "chosen_score": correct[i][1], "rejected_score": wrong[j][1],
    })
  return out


def build_unpaired(
  problem_id: str,
  prompt: str,
  completions: Sequence[str],
  scores: Sequence[float],
  *,
  correct_at: float = 1.0,
) -> list[Record]:
  """One KTO example per distinct completion: `label` True (desirable) when its score is >= `correct_at`."""
  return [
    {"id": f"{problem_id}/u{k}", "problem_id": problem_id, "prompt": prompt, "completion": c,
     "label": s >= correct_at, "score": s}
    for k, (c, s) in enumerate(_distinct(completions, scores))
  ]


# ------------------------------------------------------------------------------------------------
# Sampling and scoring.
# ------------------------------------------------------------------------------------------------


def sampled_records(
  problems: Sequence[reasoning.Problem],
  completions: Sequence[Sequence[str]],
  *,
  max_pairs_per_prompt: int,
  correct_at: float = 1.0,
  seed: int = 0,
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
  """Scores each problem's completions with its task's scorer and builds pairs and unpaired examples.

  Empty completions (EOS first) count in `sample_accuracy` as wrong but are left out of the records,
  which need text on both sides (`empty_completions_dropped` counts them).

  Returns:
    ({"pairs": [...], "unpaired": [...]}, stats) with stats: problems, completions, the share of correct
    completions (`sample_accuracy`), prompts with at least one pair, pairs, unpaired examples.
  """
  if len(problems) != len(completions):
    raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
  pairs, unpaired, n_correct, n_total, n_empty = [], [], 0, 0, 0
  for problem, texts in zip(problems, completions, strict=True):
    scores = [reasoning.score(problem, t) for t in texts]
    n_correct += sum(s >= correct_at for s in scores)
    n_total += len(scores)
    kept = [(t, s) for t, s in zip(texts, scores, strict=True) if t.strip()]
    n_empty += len(texts) - len(kept)
    texts, scores = [t for t, _ in kept], [s for _, s in kept]
    prompt = reasoning_prompt(problem)
    pairs += build_pairs(problem.id, prompt, texts, scores, max_pairs=max_pairs_per_prompt,
                         correct_at=correct_at, seed=seed)
    unpaired += build_unpaired(problem.id, prompt, texts, scores, correct_at=correct_at)
  stats = {"problems": len(problems), "completions": n_total, "empty_completions_dropped": n_empty,
           "sample_accuracy": n_correct / max(n_total, 1),
           "prompts_with_pairs": len({p["problem_id"] for p in pairs}), "pairs": len(pairs),
           "unpaired": len(unpaired), "desirable": sum(u["label"] for u in unpaired)}
  return {"pairs": pairs, "unpaired": unpaired}, stats


# ------------------------------------------------------------------------------------------------
# Pairs from worked solutions with a wrong final answer.
# ------------------------------------------------------------------------------------------------

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def wrong_answer(answer: str, rng: random.Random) -> str:
  """A plausible wrong answer: an integer moved by a small nonzero amount, else one character changed."""
  try:
    value = int(answer)
  except ValueError:
    value = None
  if value is not None:
    delta = rng.choice([-10, -3, -2, -1, 1, 2, 3, 10])
    return str(value + delta if value + delta >= 0 or value < 0 else value + abs(delta))
  if not answer:
    raise ValueError("cannot perturb an empty answer")
  i = rng.randrange(len(answer))
  pool = [d for d in (_DIGITS if answer[i].lower() in _DIGITS else "xyz") if d != answer[i].lower()]
  return answer[:i] + rng.choice(pool) + answer[i + 1:]


PERTURBATIONS = ("wrong_answer", "truncated")


def perturb(problem: reasoning.Problem, kind: str, rng: random.Random) -> str:
  """A flawed version of a problem's worked solution.

  Kinds: `wrong_answer` keeps the steps and ends in `wrong_answer(answer)`; `truncated` stops before the
  `Answer:` line, at a random character of the steps (an unfinished solution, as a weak model writes when
  it emits EOS too early).
  """
  if kind == "wrong_answer":
    return "\n".join([*problem.steps, f"{reasoning.ANSWER_PREFIX} {wrong_answer(problem.answer, rng)}"])
  if kind == "truncated":
    steps = "\n".join(problem.steps)
    return steps[: rng.randint(1, len(steps))].rstrip() or steps[:1]
  raise ValueError(f"unknown perturbation {kind!r}; choose from {PERTURBATIONS}")


def perturbed_records(
  problems: Sequence[reasoning.Problem], *, kinds: Sequence[str] = PERTURBATIONS, seed: int = 0
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
  """One pair per problem: its worked solution (chosen) vs a `perturb`ed copy (rejected).

  Problem i gets perturbation `kinds[i % len(kinds)]`. Both sides are checked with the task's scorer
  (the chosen must score 1, the rejected below 1); a problem whose perturbations all score 1 is skipped
  and counted. Unpaired examples are the two sides of every pair.
  """
  if not kinds:
    raise ValueError(f"need at least one perturbation kind of {PERTURBATIONS}")
  pairs, unpaired, skipped = [], [], 0
  for i, problem in enumerate(problems):
    rng = random.Random(f"{seed}/{problem.id}")
    chosen = problem.solution
    if reasoning.score(problem, chosen) < 1.0:
      raise ValueError(f"{problem.id}: the worked solution does not score 1 ({chosen!r:.80})")
    for _ in range(8):
      rejected = perturb(problem, kinds[i % len(kinds)], rng)
      score = reasoning.score(problem, rejected)
      if score < 1.0 and rejected != chosen:
        break
    else:
      skipped += 1
      continue
    prompt = reasoning_prompt(problem)
    pairs.append({"id": f"{problem.id}/0", "problem_id": problem.id, "prompt": prompt, "chosen": chosen,
                  "rejected": rejected, "chosen_score": 1.0, "rejected_score": score,
                  "perturbation": kinds[i % len(kinds)]})
    unpaired += [
      {"id": f"{problem.id}/u0", "problem_id": problem.id, "prompt": prompt, "completion": chosen,
       "label": True, "score": 1.0},
      {"id": f"{problem.id}/u1", "problem_id": problem.id, "prompt": prompt, "completion": rejected,
       "label": False, "score": score},
    ]
  stats = {"problems": len(problems), "pairs": len(pairs), "unpaired": len(unpaired), "skipped": skipped}
  return {"pairs": pairs, "unpaired": unpaired}, stats


# ------------------------------------------------------------------------------------------------
# JSONL files.
# ------------------------------------------------------------------------------------------------


def write_records(path: str | Path, records: Sequence[Record]) -> None:
  """Writes records as JSONL atomically (a temporary file renamed into place)."""
  write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_pairs(path: str | Path, *, max_chars: int | None = None) -> list[Record]:
  """Reads pair records (`jsonl` shape `preference`: three non-empty texts, chosen != rejected).

  Raises:
    jsonl.BadRecordError: naming the file, line and field of the first bad record.
  """
  return jsonl.read_records(path, "preference", max_chars=max_chars)[0]


def read_unpaired(path: str | Path) -> list[Record]:
  """Reads unpaired (KTO) records (`jsonl` shape `unpaired`: non-empty texts, `label` a JSON bool).

  Raises:
    jsonl.BadRecordError: naming the file, line and field of the first bad record.
  """
  return jsonl.read_records(path, "unpaired")[0]


READERS: dict[str, Callable[[str | Path], list[Record]]] = {"pairs": read_pairs, "unpaired": read_unpaired}


def file_records(
  files: str | Sequence[str], *, skip_bad_records: bool = False, max_chars: int | None = None
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
  """Users' pair files (`jsonl` shape `preference`, .jsonl or .parquet) as pairs and unpaired examples.

  Every pair also gives two KTO examples: its chosen completion (desirable) and its rejected one (not),
  each distinct (prompt, completion) once.

  Args:
    files: paths, or one string of comma-separated paths.
    skip_bad_records: skip and count bad records instead of raising `jsonl.BadRecordError`.
    max_chars: longest allowed text field (None: no limit).

  Returns:
    ({"pairs": [...], "unpaired": [...]}, stats) with stats: records, bad_records, bad_by_kind.
  """
  paths = [f for f in files.split(",") if f] if isinstance(files, str) else list(files)
  if not paths:
    raise ValueError("data.source='files' needs data.train_files and data.eval_files (comma-separated paths)")
  stats, seen, pairs = jsonl.ReadStats(), {}, []
  for path in paths:
    pairs += jsonl.read_records(path, "preference", skip_bad_records=skip_bad_records, max_chars=max_chars,
                                stats=stats, seen_ids=seen)[0]
  unpaired: dict[tuple[str, str], Record] = {}
  for k, pair in enumerate(pairs):
    pair.setdefault("id", f"pair{k}")
    for key, label in (("chosen", True), ("rejected", False)):
      unpaired.setdefault((pair["prompt"], pair[key]), {
        "id": f"{pair['id']}/{key}", "prompt": pair["prompt"], "completion": pair[key], "label": label})
  info = {"records": stats.kept, "bad_records": stats.skipped, "bad_by_kind": dict(stats.by_kind)}
  return {"pairs": pairs, "unpaired": list(unpaired.values())}, info


def cached_records(
  directory: str | Path, splits: Sequence[str], build: Callable[[str], tuple[dict[str, list[Record]], Any]]
) -> tuple[dict[str, dict[str, list[Record]]], dict[str, Any]]:
  """Record sets per split, built by `build(split)` once and kept as `<directory>/<split>.<kind>.jsonl`.

  A later call reads the files back (validated) instead of building; `stats.json` keeps the build stats.

  Returns:
    ({split: {"pairs": [...], "unpaired": [...]}}, {split: stats}).
  """
  directory = Path(directory)
  stats_file = directory / "stats.json"
  if not stats_file.exists():
    stats = {}
    for split in splits:
      records, stats[split] = build(split)
      for kind in KINDS:
        write_records(directory / f"{split}.{kind}.jsonl", records[kind])
    write_atomic(stats_file, json.dumps(stats, indent=2))  # written last: marks a complete cache
  stats = json.loads(stats_file.read_text())
  data = {split: {kind: READERS[kind](directory / f"{split}.{kind}.jsonl") for kind in KINDS}
          for split in splits}
  return data, stats
