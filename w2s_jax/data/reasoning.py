"""Reasoning tasks from `reasoning-gym`: problems with answers, worked solutions split into steps, scoring.

`reasoning-gym` generates verifiable problems procedurally (no downloads). Each task here pairs one of its
generators with a worked-solution writer:

| task              | kind                              | steps                                        |
|-------------------|-----------------------------------|----------------------------------------------|
| `chain_sum`       | pure arithmetic (easy)            | one running total per `+`/`-`                |
| `gcd`             | multi-step number theory (medium) | Euclid's algorithm, one division per step    |
| `base_conversion` | multi-step (harder)               | to base 10 by place values, then divisions   |
| `gsm_symbolic`    | GSM8K-derived word problems (hard)| the task's own `answer_cot`, one line a step |

Any other reasoning-gym dataset is usable by name (steps empty: the answer alone); user tasks come in
through `w2s_jax.data.task_registry`. A record (`Problem`) holds the prompt, the reference answer, the
steps, the task's metadata as JSON, its scorer and its answer format, so `grade(problem, completion)` can
call the task's own `score_answer` long after generation. A solution is written as the steps, one a line,
then the answer stated in the problem's format (`Answer: <answer>` by default; `w2s_jax.data.answers`).

Correctness is tolerance-free (`grade`): the extracted answer is correct iff the scorer returns exactly
1.0 or the answer equals the reference answer (both stripped). Scorers return the literal 1.0 for full
marks; partial credit is a separate number. This closes a float trap: reasoning-gym's `spell_backward`
sums 1/len per matching letter, so the gold word plus a suffix can score 1.0000000000000002 (a partial
credit that missed the scorer's own `reward == 1.0` check); `score >= 1.0` called that correct.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from collections.abc import Callable
from typing import Any

from w2s_jax.data import answers
from w2s_jax.references import is_reference, resolve_reference

ANSWER_PREFIX = answers.ANSWER_PREFIX


@dataclasses.dataclass(frozen=True)
class Problem:
  """One generated problem.

  Attributes:
    id: stable id `<task>-<split>-<index>`.
    task: reasoning-gym dataset name.
    prompt: the question as reasoning-gym words it.
    answer: reference answer string (what the task's scorer accepts).
    steps: worked solution, one step a string; the last step produces the answer.
    metadata: reasoning-gym's metadata as JSON (for the scorer and for building distractors).
    scorer: scorer name (`SCORERS`, a reasoning-gym dataset, or `module:function`); "" = the task's own.
    answer_format: how answers are stated and extracted (`answers.EXTRACTORS`); "" = `answer_line`.
  """

  id: str
  task: str
  prompt: str
  answer: str
  steps: tuple[str, ...]
  metadata: str
  scorer: str = ""
  answer_format: str = ""

  @property
  def solution(self) -> str:
    """The worked solution as a model should write it: steps, then the answer in the problem's format."""
    return "\n".join([*self.steps, answers.state(self.answer, self.answer_format)])

  @classmethod
  def from_record(cls, record: dict[str, Any]) -> Problem:
    """Rebuilds a problem from a `w2s_reasoning` record as a data source returns it (bytes or str)."""
    def text(v: Any) -> str:
      return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    return cls(id=text(record["id"]), task=text(record["task"]), prompt=text(record["prompt"]),
               answer=text(record["answer"]), steps=tuple(text(s) for s in record["steps"]),
               metadata=text(record["metadata"]))

  def entry(self) -> dict[str, Any]:
    """The reasoning-gym entry (`question`, `answer`, `metadata`) its scorer expects."""
    return {"question": self.prompt, "answer": self.answer, "metadata": json.loads(self.metadata)}


def _chain_sum_steps(entry: dict[str, Any]) -> list[str]:
  tokens = entry["metadata"]["expression"].split()
  total = int(tokens[0])
  steps = []
  for op, term in zip(tokens[1::2], tokens[2::2]):
    new = total + int(term) if op == "+" else total - int(term)
    steps.append(f"{total} {op} {term} = {new}")
    total = new
  return steps or [f"{total} = {total}"]


def _euclid(a: int, b: int, steps: list[str]) -> int:
  a, b = max(a, b), min(a, b)
  while b:
    q, r = divmod(a, b)
    steps.append(f"{a} = {q} × {b} + {r}")
    a, b = b, r
  return a


def _gcd_steps(entry: dict[str, Any]) -> list[str]:
  numbers = entry["metadata"]["numbers"]
  steps: list[str] = []
  g = numbers[0]
  for n in numbers[1:]:
    g_prev = g
    g = _euclid(g, n, steps)
    steps.append(f"gcd({g_prev}, {n}) = {g}")
  return steps


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base_conversion_steps(entry: dict[str, Any]) -> list[str]:
  m = entry["metadata"]
  src, dst, value = m["source_base"], m["target_base"], m["decimal_value"]
  digits = m["source_repr"].lower()
  steps = []
  if src != 10:
    terms = " + ".join(f"{_DIGITS.index(d)}×{src}^{len(digits) - 1 - i}" for i, d in enumerate(digits))
    steps.append(f"{digits} in base {src} = {terms} = {value} in base 10")
  if dst == 10:
    return steps or [f"{value} is already in base 10"]
  out, n = [], value
  while True:
    q, r = divmod(n, dst)
    steps.append(f"{n} = {q} × {dst} + {r} → digit {_DIGITS[r]}")
    out.append(_DIGITS[r])
    n = q
    if n == 0:
      break
  steps.append(f"Reading the digits from last to first: {''.join(reversed(out))}")
  return steps


def _gsm_symbolic_steps(entry: dict[str, Any]) -> list[str]:
  lines = [ln.strip() for ln in entry["metadata"]["answer_cot"].splitlines()]
  return [ln for ln in lines if ln and not ln.startswith("####")]


@dataclasses.dataclass(frozen=True)
class ReasoningTask:
  """A reasoning-gym dataset with a worked-solution writer.

  Attributes:
    name: reasoning-gym dataset name.
    steps: entry → worked-solution steps.
    options: keyword arguments for `reasoning_gym.create_dataset` (difficulty knobs).
    difficulty: "easy" | "medium" | "harder" | "hard" (for documentation and sweeps).
  """

  name: str
  steps: Callable[[dict[str, Any]], list[str]]
  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  difficulty: str = ""


TASKS: dict[str, ReasoningTask] = {
  "chain_sum": ReasoningTask("chain_sum", _chain_sum_steps, {"min_terms": 2, "max_terms": 5}, "easy"),
  "gcd": ReasoningTask("gcd", _gcd_steps, {}, "medium"),
  "base_conversion": ReasoningTask("base_conversion", _base_conversion_steps, {}, "harder"),
  "gsm_symbolic": ReasoningTask("gsm_symbolic", _gsm_symbolic_steps, {}, "hard"),
}


def _no_steps(entry: dict[str, Any]) -> list[str]:
  return []


def gym_names() -> list[str]:
  """Every dataset name reasoning-gym registers (read at call time, so late registrations count)."""
  from reasoning_gym.factory import DATASETS

  return sorted(DATASETS)


def _get_task(task: str) -> ReasoningTask:
  """`TASKS[task]`, or any reasoning-gym dataset by name (no worked-solution steps: the answer alone)."""
  if task in TASKS:
    return TASKS[task]
  if task in gym_names():
    return ReasoningTask(task, _no_steps)
  raise ValueError(
    f"unknown reasoning task {task!r}: neither a task with worked solutions ({', '.join(sorted(TASKS))}) "
    f"nor a reasoning-gym dataset (e.g. {', '.join(gym_names()[:8])}, ...; reasoning_gym.factory.DATASETS)"
  )


def _split_seed(seed: int, split: str) -> int:
  return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**31)


def raw_entries(
  task: str, size: int, seed: int, *, options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
  """`size` entries (dicts with question, answer, metadata) of any reasoning-gym dataset `task`.

  Tasks of `TASKS` get their difficulty options; other names use reasoning-gym's defaults. `options`
  (difficulty knobs, e.g. `{"min_terms": 3, "max_terms": 4}` for `chain_sum`) override them key by key.
  """
  import reasoning_gym

  options = {**(TASKS[task].options if task in TASKS else {}), **(options or {})}
  name = TASKS[task].name if task in TASKS else task
  try:
    ds = reasoning_gym.create_dataset(name, size=size, seed=seed, **options)
  except (TypeError, AssertionError, ValueError) as e:
    raise ValueError(f"reasoning-gym {name!r} rejects the options {options} (data.task_options): {e}") from e
  return [ds[i] for i in range(size)]


def generate(
  task: str, split: str, size: int, *, seed: int = 0, exclude: set[str] | None = None,
  options: dict[str, Any] | None = None, answer_format: str = "",
) -> list[Problem]:
  """Generates `size` problems of `task` for `split`.

  Splits draw from different reasoning-gym seeds; questions in `exclude` (e.g. the train split's, when
  generating the test split) and repeats are skipped, so splits never share a question.

  Args:
    task: a key of `TASKS` (worked solutions), or any reasoning-gym dataset name (steps empty).
    split: split name; part of the seed and of every id.
    size: number of problems wanted.
    seed: base seed.
    exclude: questions that must not appear.
    options: difficulty knobs overriding the task's `options` (see `raw_entries`); None = the task's.
    answer_format: the problems' `answer_format` ("" = `answers.DEFAULT_FORMAT`).

  Returns:
    `size` problems (fewer only if the task cannot produce that many distinct questions).
  """
  t = _get_task(task)
  seen = set(exclude or ())
  out: list[Problem] = []
  draw = size
  for attempt in range(4):
    for entry in raw_entries(task, draw, _split_seed(seed + attempt * 7919, split), options=options):
      if entry["question"] in seen:
        continue
      seen.add(entry["question"])
      out.append(Problem(
        id=f"{task}-{split}-{len(out)}", task=task, prompt=entry["question"], answer=str(entry["answer"]),
        steps=tuple(t.steps(entry)), metadata=json.dumps(entry["metadata"], default=str),
        answer_format=answer_format,
      ))
      if len(out) == size:
        return out
    draw = 2 * (size - len(out)) + 16
  return out


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(completion: str, answer_format: str = "") -> str | None:
  """The answer a completion states in `answer_format` (`answers.EXTRACTORS`; "" = `Answer:` line)."""
  return answers.extract(completion, answer_format)


def _exact(answer: str | None, entry: dict[str, Any]) -> float:
  return float(answer is not None and answer.strip() == str(entry["answer"]).strip())


def _number(answer: str | None, entry: dict[str, Any]) -> float:
  try:
    return float(float(str(answer).replace(",", "")) == float(str(entry["answer"]).replace(",", "")))
  except ValueError:
    return 0.0


SCORERS: dict[str, Callable[[str | None, dict[str, Any]], float]] = {"exact": _exact, "number": _number}
_scorers: dict[str, Callable[[str | None, dict[str, Any]], float]] = {}


def scorer(name: str) -> Callable[[str | None, dict[str, Any]], float]:
  """`fn(answer, entry) -> credit` by name: `SCORERS`, a reasoning-gym dataset, or `module:function`."""
  if name not in _scorers:
    if name in SCORERS:
      _scorers[name] = SCORERS[name]
    elif is_reference(name):
      _scorers[name] = resolve_reference(name, "scorer")
    elif name in TASKS or name in gym_names():
      import reasoning_gym

      _scorers[name] = reasoning_gym.get_score_answer_fn(TASKS[name].name if name in TASKS else name)
    else:
      raise ValueError(f"unknown scorer {name!r}: use one of {sorted(SCORERS)}, a reasoning-gym dataset "
                       "name or a 'module:function' reference")
  return _scorers[name]


@dataclasses.dataclass(frozen=True)
class Grade:
  """A completion's grade.

  Attributes:
    answer: the extracted answer (None: the format's marker is absent).
    correct: the tolerance-free verdict (see the module docstring).
    credit: the scorer's own value (partial credit; may exceed 1.0 by float error, see above).
  """

  answer: str | None
  correct: bool
  credit: float


def grade_answer(problem: Problem, answer: str | None) -> Grade:
  """Grades an already extracted answer with the problem's scorer."""
  credit = float(scorer(problem.scorer or problem.task)(answer, problem.entry()))
  if not math.isfinite(credit):
    raise ValueError(f"scorer {problem.scorer or problem.task!r} gave {credit} for problem {problem.id}")
  correct = answer is not None and (credit == 1.0 or answer.strip() == problem.answer.strip())
  return Grade(answer, correct, credit)


def grade(problem: Problem, completion: str) -> Grade:
  """Extracts the answer in the problem's format and grades it."""
  return grade_answer(problem, extract_answer(completion, problem.answer_format))


_BELOW_ONE = math.nextafter(1.0, 0.0)


def score(problem: Problem, completion: str) -> float:
  """1.0 iff `grade` says correct, else the scorer's partial credit capped just below 1.0.

  The cap keeps every `score(...) >= 1.0` and `== 1.0` test right when a scorer's partial credit
  overflows 1.0 by float error (the spell_backward trap); `grade(...).credit` is the raw value.
  """
  g = grade(problem, completion)
  return 1.0 if g.correct else min(g.credit, _BELOW_ONE)


def numbers_in(text: str) -> list[str]:
  """Numbers written in `text`, in order (commas inside numbers removed)."""
  return [m.replace(",", "") for m in _NUMBER.findall(text)]
