"""Prompt/response pairs for SFT, by corpus name: what a config's `data.corpus` selects.

Each corpus is `fn(split, data_cfg) -> (pairs, info)` with split "train" or "eval"; `data_cfg` is the
config's `data` section (keys read with defaults, so configs name only what they use):

- `python_reference`: paragraphs of the Python reference (`eval_frac`, `max_chars`).
- a task of `reasoning.TASKS` (e.g. `gsm_symbolic`): prompt `Question: …\\nSolution:\\n`, response the
  worked solution ending `Answer: …`. `train_size`/`eval_size` problems, generated in process, or read
  from the `w2s_reasoning` TFDS builder when `data_dir` is set (built there if missing).
- `pretrain`: the ladder's pretraining mix (`corpus.documents`: `problems_per_task`, `qa_per_task`,
  `with_docstrings`), every token trained (empty prompt); documents are cut at line ends into chunks of
  at most `max_chars`; the eval split is `eval_frac` of documents by a stable hash of their id, less
  chunks that also occur in train.
- `jsonl`: users' `sft`-shape files (`train_files`, `eval_files`; `skip_bad_records`, `max_chars`); `info`
  reports the skipped-record counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2s_jax.data import corpus, jsonl, reasoning, text

Pairs = list[tuple[str, str]]


def reasoning_prompt(problem: reasoning.Problem) -> str:
  """The SFT prompt of a problem (the response is `problem.solution`)."""
  return f"Question: {problem.prompt}\nSolution:\n"


def reasoning_problems(task: str, split: str, *, size: int, train_size: int = 0, seed: int = 0,
                       data_dir: str | None = None) -> list[reasoning.Problem]:
  """`size` problems of `task` from the train ("train") or held-out ("eval") split.

  In process, the eval split never repeats a question of the `train_size` train problems. With
  `data_dir`, problems are the first `size` records of the `w2s_reasoning/<task>` TFDS build.
  """
  if data_dir:
    from w2s_jax.data import builders

    source = builders.build("w2s_reasoning", task, data_dir=data_dir).as_data_source()
    records = builders.read_all(source["train" if split == "train" else "test"], limit=size)
    return [reasoning.Problem.from_record(r) for r in records]
  train = reasoning.generate(task, "train", size if split == "train" else train_size, seed=seed)
  if split == "train":
    return train
  return reasoning.generate(task, "test", size, seed=seed, exclude={p.prompt for p in train})


def _reasoning_corpus(task: str) -> Callable[[str, Any], tuple[Pairs, dict[str, Any]]]:
  def pairs(split: str, d: Any) -> tuple[Pairs, dict[str, Any]]:
    train_size = int(d.get("train_size", 2000))
    size = train_size if split == "train" else int(d.get("eval_size", 200))
    problems = reasoning_problems(task, split, size=size, train_size=train_size,
                                  seed=int(d.get("data_seed", 0)), data_dir=d.get("data_dir") or None)
    return [(reasoning_prompt(p), p.solution) for p in problems], {"problems": len(problems)}

  return pairs


def _python_reference(split: str, d: Any) -> tuple[Pairs, dict[str, Any]]:
  eval_frac, max_chars = float(d.get("eval_frac", 0.05)), int(d.get("max_chars") or 600)
  return text.python_reference_examples(split, eval_frac=eval_frac, max_chars=max_chars), {}


def chunk_lines(text_: str, max_chars: int) -> list[str]:
  """`text_` cut at line ends into pieces of at most `max_chars` (a longer single line is cut hard)."""
  chunks, current = [], ""
  for line in text_.splitlines(keepends=True):
    while len(line) > max_chars:
      if current:
        chunks.append(current)
        current = ""
      chunks.append(line[:max_chars])
      line = line[max_chars:]
    if len(current) + len(line) > max_chars:
      chunks.append(current)
      current = ""
    current += line
  return [c for c in [*chunks, current] if c]


def _pretrain(split: str, d: Any) -> tuple[Pairs, dict[str, Any]]:
  docs = corpus.documents(problems_per_task=int(d.get("problems_per_task", 2000)),
                          qa_per_task=int(d.get("qa_per_task", 500)),
                          with_docstrings=bool(d.get("with_docstrings", False)),
                          seed=int(d.get("data_seed", 0)))
  eval_frac, max_chars = float(d.get("eval_frac", 0.01)), int(d.get("max_chars") or 1000)
  chunks: dict[bool, list[str]] = {False: [], True: []}
  n_docs = {False: 0, True: 0}
  for doc_id, _, t in docs:
    held = corpus.in_test_split(doc_id, eval_frac)
    n_docs[held] += 1
    chunks[held] += chunk_lines(t, max_chars)
  if split == "train":
    return [("", c) for c in chunks[False]], {"documents": n_docs[False], "chunks": len(chunks[False])}
  seen = set(chunks[False])  # some Python reference topics repeat others' paragraphs: no leaks into eval
  held_out = [c for c in chunks[True] if c not in seen]
  info = {"documents": n_docs[True], "chunks": len(held_out),
          "dropped_seen_in_train": len(chunks[True]) - len(held_out)}
  return [("", c) for c in held_out], info


def _jsonl(split: str, d: Any) -> tuple[Pairs, dict[str, Any]]:
  files = d.get("train_files" if split == "train" else "eval_files") or ()
  if isinstance(files, str):
    files = [f for f in files.split(",") if f]
  if not files:
    raise ValueError(f"corpus 'jsonl' needs data.{'train' if split == 'train' else 'eval'}_files")
  stats, seen, records = jsonl.ReadStats(), {}, []
  for path in files:
    records += jsonl.read_records(path, "sft", skip_bad_records=bool(d.get("skip_bad_records", False)),
                                  max_chars=d.get("max_chars"), stats=stats, seen_ids=seen)[0]
  info = {"records": stats.kept, "bad_records": stats.skipped, "bad_by_kind": dict(stats.by_kind)}
  return [(r["prompt"], r["response"]) for r in records], info


SFT_CORPORA: dict[str, Callable[[str, Any], tuple[Pairs, dict[str, Any]]]] = {
  "python_reference": _python_reference,
  **{task: _reasoning_corpus(task) for task in reasoning.TASKS},
  "pretrain": _pretrain,
  "jsonl": _jsonl,
}
