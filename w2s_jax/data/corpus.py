"""A pretraining corpus for the from-scratch model ladder, from real text and tasks available offline.

Sources (each document has a `source` tag):
- `reasoning/<task>`: reasoning-gym problems with worked solutions (`PRETRAIN_TASKS`, listed here so that
  a task added to `reasoning.TASKS` or `task_registry` never silently enters the corpus), written as
  `Question: ...\\nSolution:\\n<steps>\\nAnswer: ...`;
- `qa/<task>`: problems of further reasoning-gym tasks (logic, dates, sorting, counting, algebra…) with
  their answers, as `Question: ...\\nAnswer: ...`;
- `python_reference`: paragraphs of the Python language reference (`pydoc_data`, ~460 KB of English);
- `stdlib_docstrings` (`with_docstrings=True`): module, class and function docstrings of the Python
  standard library (~1.1 MB of technical English; ~8 s to parse).

A focused corpus for one verification variant of `w2s_sets.VARIANTS` (`variant_documents`): worked
solutions of problems from the variant's pretraining pool (never a W2S question), written as the W2S
text writes them, alternately with steps (`Question: 38 + 57 =\nSolution:\n38 + 57 = 95\nAnswer: 95`) and
as bare question/answer pairs (`Question: 38 + 57 =\nAnswer: 95`).

The mix grows with `problems_per_task`, so a larger corpus gives the bigger ladder models data to use.
Documents go to the test split by a stable hash of their id (`test_frac`).
"""

from __future__ import annotations

import ast
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

from w2s_jax.data import reasoning, w2s_sets

PRETRAIN_TASKS = ("chain_sum", "gcd", "base_conversion", "gsm_symbolic")
QA_TASKS = (
  "basic_arithmetic", "prime_factorization", "lcm", "fraction_simplification", "number_sorting",
  "family_relationships", "syllogism", "time_intervals", "calendar_arithmetic", "leg_counting",
  "letter_counting", "word_sorting", "propositional_logic", "decimal_arithmetic", "products",
  "power_function", "knights_knaves", "tower_of_hanoi",
)
_SKIP_STDLIB = {"test", "tests", "site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo"}


def in_test_split(doc_id: str, test_frac: float) -> bool:
  """Whether a document belongs to the test split (stable across runs and machines)."""
  return (zlib.crc32(doc_id.encode()) % 10_000) < test_frac * 10_000


def reasoning_documents(problems_per_task: int, seed: int) -> Iterator[tuple[str, str, str]]:
  """(id, source, text) of worked reasoning problems."""
  for task in PRETRAIN_TASKS:
    for p in reasoning.generate(task, "pretrain", problems_per_task, seed=seed):
      yield p.id, f"reasoning/{task}", f"Question: {p.prompt}\nSolution:\n{p.solution}"


def qa_documents(problems_per_task: int, seed: int) -> Iterator[tuple[str, str, str]]:
  """(id, source, text) of question/answer pairs from `QA_TASKS`."""
  for task in QA_TASKS:
    for i, entry in enumerate(reasoning.raw_entries(task, problems_per_task, seed)):
      text = f"Question: {entry['question'].strip()}\nAnswer: {entry['answer']}"
      yield f"{task}-qa-{i}", f"qa/{task}", text


def python_reference_documents() -> Iterator[tuple[str, str, str]]:
  """(id, source, text) of the Python language reference topics, one document per topic."""
  for name in sorted(topics):
    text = topics[name].strip()
    if len(text) >= 100:
      yield f"pydoc-{name}", "python_reference", text


def stdlib_docstring_documents(min_chars: int = 200) -> Iterator[tuple[str, str, str]]:
  """(id, source, text) of the standard library's docstrings of at least `min_chars` characters."""
  root = Path(sysconfig.get_paths()["stdlib"])
  for path in sorted(root.rglob("*.py")):
    rel = path.relative_to(root)
    if _SKIP_STDLIB & set(rel.parts):
      continue
    try:
      tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
      continue
    for node in ast.walk(tree):
      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        doc = ast.get_docstring(node)
        if doc and len(doc) >= min_chars:
          name = getattr(node, "name", "")
          yield f"stdlib-{rel.as_posix()}-{name}-{getattr(node, 'lineno', 0)}", "stdlib_docstrings", doc


def variant_documents(variant: str, problems: int, seed: int = 0) -> Iterator[tuple[str, str, str]]:
  """(id, source, text) of `problems` worked problems of a `w2s_sets.VARIANTS` task's pretraining pool."""
  for i, p in enumerate(w2s_sets.variant_problems(variant, "pretrain", problems, pool="pretrain", seed=seed)):
    question = f"Question: {w2s_sets.variant_question(p)}\n"
    body = f"Answer: {p.answer}" if i % 2 else f"Solution:\n{p.solution}"
    yield p.id, f"w2s/{variant}", question + body


def documents(
  *, problems_per_task: int, qa_per_task: int, with_docstrings: bool, seed: int = 0
) -> Iterator[tuple[str, str, str]]:
  """Every (id, source, text) document of the corpus, in a fixed order."""
  yield from reasoning_documents(problems_per_task, seed)
  yield from qa_documents(qa_per_task, seed)
  yield from python_reference_documents()
  if with_docstrings:
    yield from stdlib_docstring_documents()
