"""Weak-to-strong classification sets from reasoning tasks, in the openai/weak-to-strong record format.

Each record asks "is this the answer to this question?": `txt = "Q: <question> A: <candidate>"` (the
format of openai/weak-to-strong's `format_sciq`), `hard_label` 1 when the candidate is the reference
answer, and `soft_label = [1 - hard_label, hard_label]`. Half the candidates (by a seeded coin) are
correct; the others are plausible wrong answers of one of three kinds:

- `perturbed`: the answer nudged (±1, ±2, ±10, digits swapped, ×10) — right size, wrong value;
- `other_problem`: the answer of another problem of the same task (of the same GSM template if possible);
- `wrong_step`: a number the worked solution computes on the way (stopping early or a wrong step).

Answers that are not integers (any reasoning-gym task by name, e.g. `sentence_reordering`, `syllogism`,
`word_sorting`, `spell_backward`, `family_relationships`) get near misses of their own shape
(`STRING_KINDS`): `word_swap` (one adjacent pair of words swapped, punctuation kept in place: a fully
shuffled sentence is far too easy to spot), `word_swap_any` (any two different words swapped),
`char_swap` (two adjacent letters of a single word swapped), `list_swap` / `list_drop` (two adjacent
elements of a comma-separated list swapped, or one dropped), `op_swap` (one operator of an arithmetic
expression replaced: the same numbers, another value; `countdown`), and `other_problem`. `TASK_KINDS`
fixes the kinds of known tasks, `kinds_for` picks by the answer's shape otherwise; `distractors=` (config
`data.distractors`) overrides both. A distractor never equals the answer and always scores < 1 with the
task's own reasoning-gym scorer (redrawn otherwise).

Tasks differ clearly in difficulty: checking a `chain_sum` total needs a few additions; checking a
`gsm_symbolic` answer needs reading a word problem and several operations.

`VARIANTS` are tasks with their own reasoning-gym difficulty options, sized for from-scratch CPU models:
`chain_sum_3x1` (three one-digit terms, e.g. `7 - 9 + 4 =`) and `chain_sum_2x2` (two terms of one or two
digits). Their text is written as the ladder's pretraining
corpus writes the same problems (`"Question: 38 + 57 =\nAnswer: 95"`, `corpus.variant_documents`), so
what a rung learned in pretraining is there to use; their questions are split by a stable hash into a
W2S pool and a pretraining pool (`in_pretrain_pool`), so no W2S question is ever a pretraining document.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Sequence
from typing import Any

from w2s_jax.data import reasoning, task_registry

W2S_TASKS = {"chain_sum": "easy", "chain_sum_3x1": "easy", "chain_sum_2x2": "easy", "gcd": "medium",
             "gsm_symbolic": "hard"}
# variant -> (task of `reasoning.TASKS` whose dataset and steps it uses, reasoning-gym options, share of
# the question space kept for pretraining: never in the W2S sets). chain_sum_3x1 has 4,000 questions,
# chain_sum_2x2 20,000.
VARIANTS: dict[str, tuple[str, dict[str, int], float]] = {
  "chain_sum_3x1": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}, 0.4),
  "chain_sum_2x2": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}, 0.6),
}
DISTRACTOR_KINDS = ("perturbed", "other_problem", "wrong_step")  # integer answers
STRING_KINDS = ("word_swap", "word_swap_any", "char_swap", "list_swap", "list_drop", "op_swap",
                "other_problem")
# reasoning-gym tasks whose distractors are fixed (others: by the answer's shape, `kinds_for`)
TASK_KINDS: dict[str, tuple[str, ...]] = {
  "sentence_reordering": ("word_swap",), "spell_backward": ("char_swap",),
  "word_sorting": ("list_swap", "list_drop"), "syllogism": ("other_problem",),
  "family_relationships": ("other_problem",), "countdown": ("op_swap",),
}
_EXPRESSION = re.compile(r"^[\d\s+\-*/().]*\d[\d\s()]*[+\-*/][\d\s+\-*/().]*$")
_PUNCT = re.compile(r"^(.*?)([.,!?;:\"')]*)$")


def _as_int(text: str) -> int | None:
  try:
    return int(text.replace(",", ""))
  except ValueError:
    return None


def perturb(answer: str, rng: random.Random) -> str:
  """A wrong numeric answer near `answer` (same sign where possible)."""
  a = _as_int(answer)
  if a is None:
    raise ValueError(f"cannot perturb non-integer answer {answer!r}")
  options = {a + 1, a - 1, a + 2, a - 2, a + 10, a - 10, a * 10}
  s = str(abs(a))
  if len(s) >= 2:
    i = rng.randrange(len(s) - 1)
    swapped = s[:i] + s[i + 1] + s[i] + s[i + 2:]
    options.add(int(swapped) * (-1 if a < 0 else 1))
  options.discard(a)
  if a >= 0:
    options = {o for o in options if o >= 0}
  return str(rng.choice(sorted(options)))


def step_values(problem: reasoning.Problem) -> list[str]:
  """Numbers the worked solution computes (the last number right of each `=`), except the answer and 0."""
  values = []
  for step in problem.steps:
    for part in step.split("=")[1:]:
      nums = reasoning.numbers_in(part)
      if nums:
        values.append(nums[-1])
  answer = _as_int(problem.answer)
  return [v for v in dict.fromkeys(values) if _as_int(v) not in (None, 0, answer)]


def _group_key(problem: reasoning.Problem) -> Any:
  # GSM problems of one template share their variable names: answers of the same template are the most
  # plausible "another problem's answer".

  meta = json.loads(problem.metadata)
  return tuple(sorted(meta.get("variables", {}))) if problem.task == "gsm_symbolic" else problem.task


def swap_words(answer: str, rng: random.Random, *, adjacent: bool = True) -> str | None:
  """`answer` with one pair of different words swapped (an adjacent pair, or any two with `adjacent=False`),
  trailing punctuation left in place (the first word kept first when there are 3+ words, so capitalisation
  gives nothing away); None if impossible."""
  words = answer.split(" ")
  parts = [_PUNCT.match(w).groups() for w in words]
  first = 1 if len(words) >= 3 else 0
  pairs = [(i, j) for i in range(first, len(words)) for j in range(i + 1, len(words))
           if (j == i + 1 or not adjacent) and parts[i][0] != parts[j][0] and parts[i][0] and parts[j][0]]
  if not pairs:
    return None
  i, j = rng.choice(pairs)
  parts[i], parts[j] = (parts[j][0], parts[i][1]), (parts[i][0], parts[j][1])
  return " ".join(core + punct for core, punct in parts)


def swap_chars(answer: str, rng: random.Random) -> str | None:
  """A single word with two adjacent different characters swapped; None if impossible."""
  pairs = [i for i in range(len(answer) - 1) if answer[i] != answer[i + 1]]
  if not pairs or " " in answer:
    return None
  i = rng.choice(pairs)
  return answer[:i] + answer[i + 1] + answer[i] + answer[i + 2:]


def edit_list(answer: str, rng: random.Random, *, drop: bool) -> str | None:
  """A comma-separated list with two adjacent different elements swapped (or, `drop`, one element
  dropped); None if impossible."""
  items = answer.split(", ")
  if len(items) < 2:
    return None
  if drop:
    del items[rng.randrange(len(items))]
    return ", ".join(items)
  pairs = [i for i in range(len(items) - 1) if items[i] != items[i + 1]]
  if not pairs:
    return None
  i = rng.choice(pairs)
  items[i], items[i + 1] = items[i + 1], items[i]
  return ", ".join(items)


def _op_style(op: str, expression: str) -> str:
  """`op` spaced as `expression` spaces it elsewhere (default: " + ", " - ", "*", "/")."""
  if re.search(rf"\s\{op}\s", expression):
    return f" {op} "
  if re.search(rf"[\d)]\{op}[\d(]", expression):
    return op
  return f" {op} " if op in "+-" else op


def swap_operator(answer: str, rng: random.Random) -> str | None:
  """An arithmetic expression with one binary operator (after a digit or ")") replaced by another of
  + - * /, spaced as the expression spaces that operator (so spacing gives nothing away): the same
  numbers, a different value; None if it has none."""
  spots = [m for m in re.finditer(r"\s*([+\-*/])\s*", answer)
           if answer[:m.start()].rstrip()[-1:] in set("0123456789)")]
  if not spots:
    return None
  m = rng.choice(spots)
  op = rng.choice([o for o in "+-*/" if o != m.group(1)])
  return answer[:m.start()] + _op_style(op, answer) + answer[m.end():]


def kinds_for(problem: reasoning.Problem) -> tuple[str, ...]:
  """Distractor kinds of a problem: `TASK_KINDS[task]`, else by its answer's shape (integer, list,
  several words, one word)."""
  if problem.task in TASK_KINDS:
    return TASK_KINDS[problem.task]
  if _as_int(problem.answer) is not None:
    return DISTRACTOR_KINDS
  if ", " in problem.answer:
    return ("list_swap", "list_drop", "other_problem")
  if _EXPRESSION.match(problem.answer.strip()):
    return ("op_swap", "other_problem")
  return ("word_swap", "other_problem") if " " in problem.answer.strip() else ("char_swap", "other_problem")


def distractor(
  problem: reasoning.Problem, others: Sequence[reasoning.Problem], kind: str, rng: random.Random
) -> str | None:
  """A wrong candidate answer of `kind` for `problem` (None when that kind has nothing to offer)."""
  if kind == "perturbed":
    return perturb(problem.answer, rng)
  if kind == "other_problem":
    pool = [o.answer for o in others if o.answer != problem.answer]
    return rng.choice(pool) if pool else None
  if kind == "wrong_step":
    values = step_values(problem)
    return rng.choice(values) if values else None
  if kind in ("word_swap", "word_swap_any"):
    return swap_words(problem.answer, rng, adjacent=kind == "word_swap")
  if kind == "char_swap":
    return swap_chars(problem.answer, rng)
  if kind in ("list_swap", "list_drop"):
    return edit_list(problem.answer, rng, drop=kind == "list_drop")
  if kind == "op_swap":
    return swap_operator(problem.answer, rng)
  raise ValueError(f"unknown distractor kind {kind!r}; choose one of {DISTRACTOR_KINDS + STRING_KINDS}")


def _wrong(problem: reasoning.Problem, others: Sequence[reasoning.Problem], rng: random.Random,
           kinds: Sequence[str] = ()) -> tuple[str, str]:
  """(candidate, kind): a distractor of one of `kinds` (default `kinds_for(problem)`; in random order) that
  differs from the answer and scores < 1 with the task's scorer; a few draws per kind.

  Raises:
    ValueError: when no kind yields one (names the problem).
  """
  kinds = list(kinds or kinds_for(problem))
  rng.shuffle(kinds)
  for kind in kinds:
    for _ in range(4):
      candidate = distractor(problem, others, kind, rng)
      if candidate is None:
        break
      if candidate.strip() != problem.answer.strip() and reasoning.score(problem, f"Answer: {candidate}") < 1:
        return candidate, kind
  raise ValueError(f"problem {problem.id} ({problem.task}, answer {problem.answer!r}): no distractor of "
                   f"kinds {kinds} differs from the answer")


def in_pretrain_pool(variant: str, question: str) -> bool:
  """Whether a variant's question belongs to its pretraining pool (stable across runs and machines)."""
  return (zlib.crc32(question.encode()) % 10_000) < VARIANTS[variant][2] * 10_000


def variant_question(problem: reasoning.Problem) -> str:
  """A variant problem's question as its W2S text and the pretraining corpus write it: `"38 + 57 ="`."""
  return json.loads(problem.metadata)["expression"] + " ="


def variant_problems(
  variant: str, split: str, size: int, *, pool: str, seed: int = 0, exclude: set[str] | None = None
) -> list[reasoning.Problem]:
  """`size` distinct problems of a `VARIANTS` task from its `pool` ("w2s" or "pretrain") of questions.

  Problems keep the reasoning-gym task name (`problem.task`), so `reasoning.score` checks their answers.
  """
  import reasoning_gym

  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
  if pool not in ("w2s", "pretrain"):
    raise ValueError(f"pool must be 'w2s' or 'pretrain', got {pool!r}")
  base, options, _ = VARIANTS[variant]
  steps = reasoning.TASKS[base].steps
  seen, out = set(exclude or ()), []
  for attempt in range(6):  # reasoning-gym item i is drawn with seed + i: seeds far apart, no overlap
    ds_seed = zlib.crc32(f"{variant}-{split}-{seed}-{attempt}".encode()) * 1_000
    draw = 8 * (size - len(out)) + 64
    ds = reasoning_gym.create_dataset(reasoning.TASKS[base].name, size=draw, seed=ds_seed, **options)
    for i in range(draw):
      entry = ds[i]
      q = entry["question"]
      if q in seen or in_pretrain_pool(variant, q) != (pool == "pretrain"):
        continue
      seen.add(q)
      out.append(reasoning.Problem(
        id=f"{variant}-{split}-{len(out)}", task=base, prompt=q, answer=str(entry["answer"]),
        steps=tuple(steps(entry)), metadata=json.dumps(entry["metadata"], default=str)))
      if len(out) == size:
        return out
  return out


def make_records(
  problems: Sequence[reasoning.Problem], *, seed: int, variant: str = "", candidates: int = 1,
  template: str = "", distractors: Sequence[str] = (),
) -> list[dict[str, Any]]:
  """openai/weak-to-strong records (plus provenance fields) for `problems`.

  With `candidates` > 1, each problem gives that many records, each with its own coin and wrong answer
  (independent draws, so a candidate can repeat), next to each other; they share `question`, so a split
  by question keeps them together (`protocol.split_halves(groups=...)`).

  Returns:
    dicts with `id`, `txt`, `hard_label` (int), `soft_label` ([2] floats), `task`, `question`,
    `candidate` and `distractor` (the wrong-answer kind, "" for correct candidates). With `variant`
    (problems of `variant_problems`), `txt` is `"Question: <expression> =\nAnswer: <candidate>"`; with
    `template` (a format string with `{question}` and `{candidate}`, e.g. `"Sentence: {candidate}"`) it is
    the template filled in. `distractors` (kinds of `DISTRACTOR_KINDS` / `STRING_KINDS`) replaces
    `kinds_for`'s choice.
  """
  _check_template(template)
  unknown = sorted(set(distractors) - set(DISTRACTOR_KINDS + STRING_KINDS))
  if unknown:
    raise ValueError(f"data.distractors: unknown kinds {unknown}; choose from "
                     f"{sorted(set(DISTRACTOR_KINDS + STRING_KINDS))}")
  if candidates < 1:
    raise ValueError(f"candidates must be >= 1, got {candidates}")
  groups: dict[Any, list[reasoning.Problem]] = {}
  for p in problems:
    groups.setdefault(_group_key(p), []).append(p)
  out = []
  for i, p in enumerate(problems):
    same = [o for o in groups[_group_key(p)] if o is not p]
    others = same if len(same) >= 2 else [o for o in problems if o is not p]
    question = f"Question: {variant_question(p)}\nAnswer:" if variant else f"Q: {p.prompt} A:"
    for k in range(candidates):
      suffix = f"-c{k}" if k else ""
      rng = random.Random(f"{seed}-{p.id}{suffix}")
      hard_label = int(rng.random() < 0.5)
      candidate, kind = p.answer, ""
      if not hard_label:
        candidate, kind = _wrong(p, others, rng, distractors)
      shown = variant_question(p) if variant else p.prompt
      txt = template.format(question=shown, candidate=candidate) if template else f"{question} {candidate}"
      out.append({
        "id": f"{p.id}-w2s{i}{suffix}", "txt": txt, "hard_label": hard_label,
        "soft_label": [1.0 - hard_label, float(hard_label)], "task": p.task, "question": p.prompt,
        "candidate": candidate, "distractor": kind,
      })
  return out


def _check_template(template: str) -> None:
  if template and ("{candidate}" not in template or re.search(r"\{(?!question\}|candidate\})", template)):
    raise ValueError(f"data.template {template!r}: use {{candidate}} (and optionally {{question}}), "
                     "no other fields")


def generate(
  task: str, split: str, size: int, *, seed: int = 0, exclude: set[str] | None = None, candidates: int = 1,
  template: str = "", distractors: Sequence[str] = (),
) -> list[dict[str, Any]]:
  """W2S records of `task` (a `W2S_TASKS` task, any reasoning-gym dataset name, or a user task of
  `task_registry`: a .jsonl/.parquet file or "module:function", whose "eval" split is the test split) for
  `split`: `size` problems whose questions are not in `exclude`, with `candidates` records each (see
  `make_records`)."""
  if task in VARIANTS:
    problems = variant_problems(task, f"w2s_{split}", size, pool="w2s", seed=seed, exclude=exclude)
    if len(problems) < size:
      raise ValueError(f"{task}: its W2S pool has {len(problems)} questions left for {split!r}, "
                       f"asked for {size} (data.train_size / data.eval_size count questions)")
    return make_records(problems, seed=seed, variant=task, candidates=candidates, template=template,
                        distractors=distractors)

  if task_registry.kind(task) in ("file", "function", "registered"):  # the user's own problems
    problems = task_registry.generate(task, "train" if split == "train" else "eval", size, seed=seed,
                                      exclude=exclude)
    if len(problems) < size:
      raise ValueError(f"{task}: {len(problems)} distinct {split} questions, asked for {size} (lower "
                       "data.train_size / data.eval_size, or add records; a file's split field or eval_frac "
                       "decides which records are test questions)")
    return make_records(problems, seed=seed, candidates=candidates, template=template,
                        distractors=distractors)
  problems = reasoning.generate(task, f"w2s_{split}", size, seed=seed, exclude=exclude)
  if len(problems) < size:
    raise ValueError(f"{task}: only {len(problems)} distinct questions for {split!r}, asked for {size}")
  return make_records(problems, seed=seed, candidates=candidates, template=template, distractors=distractors)


def generate_splits(
  task: str, n_train: int, n_test: int, *, seed: int = 0, candidates: int = 1, template: str = "",
  distractors: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(train, test) W2S records of `task`, no test question also being a train question.

  `n_train` and `n_test` count questions; a train question gives `candidates` records, a test question one.
  """
  kw = dict(seed=seed, template=template, distractors=distractors)
  train = generate(task, "train", n_train, candidates=candidates, **kw)
  test = generate(task, "test", n_test, exclude={r["question"] for r in train}, **kw)
  return train, test
