"""Prompt/response pairs for SFT, by corpus name: what a config's `data.corpus` selects.

Each corpus is `fn(split, data_cfg) -> (pairs, info)` with split "train" or "eval"; `data_cfg` is the
config's `data` section (keys read with defaults, so configs name only what they use):

- `python_reference`: paragraphs of the Python reference (`eval_frac`, `max_chars`).
- any task spec of `task_registry` (a reasoning-gym name such as `gsm_symbolic` or `countdown`, a
  registered name, a prompt/answer file, `module:function`): prompt `Question: …\\nSolution:\\n`, response
  the worked solution ending with the answer in `answer_format` (default `Answer: …`).
  `train_size`/`eval_size` problems with `task_options`, generated in process, or (tasks of
  `reasoning.TASKS` only) read from the `w2s_reasoning` TFDS builder when `data_dir` is set.
- `pretrain`: the ladder's pretraining mix (`corpus.documents`: `problems_per_task`, `qa_per_task`,
  `with_docstrings`), every token trained (empty prompt); documents are cut at line ends into chunks of
  at most `max_chars`; the eval split is `eval_frac` of documents by a stable hash of their id, less
  chunks that also occur in train.
- `jsonl`: users' `sft`-shape files (`train_files`, `eval_files`; `skip_bad_records`, `max_chars`); `info`
  reports the skipped-record counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from w2s_jax.data import answers, builders, corpus, jsonl, reasoning, task_registry, text

Pairs = list[tuple[str, str]]


def reasoning_prompt(problem: reasoning.Problem) -> str:
  """The SFT prompt of a problem (the response is `problem.solution`)."""
  return f"Question: {problem.prompt}\nSolution:\n"


def reasoning_problems(task: str, split: str, *, size: int, train_size: int = 0, seed: int = 0,
                       data_dir: str | None = None, options: Any = None,
                       answer_format: str = "") -> list[reasoning.Problem]:
  """`size` problems of task spec `task` (`task_registry`) from the "train" or held-out "eval" split.

  In process, the eval split never repeats a question of the `train_size` train problems. With
  `data_dir`, problems are the first `size` records of the `w2s_reasoning/<task>` TFDS build.
  """
  if data_dir:
    source = builders.build("w2s_reasoning", task, data_dir=data_dir).as_data_source()
    records = builders.read_all(source["train" if split == "train" else "test"], limit=size)
    return [reasoning.Problem.from_record(r) for r in records]
  return task_registry.problems(task, split, size=size, train_size=train_size, seed=seed, options=options,
                                answer_format=answer_format)


def problems_from_config(d: Any, split: str, *, task_key: str = "task") -> list[reasoning.Problem]:
  """The problems a config's `data` section names (`task` or `corpus`, `task_options`, `answer_format`,
  `train_size`, `eval_size`, `seed`, `data_dir`) for split "train" or "eval"."""
  train_size = int(d.get("train_size", 2000))
  size = train_size if split == "train" else int(d.get("eval_size", 200))
  fmt = d.get("answer_format") or ""
  return reasoning_problems(d[task_key], split, size=size, train_size=train_size,
                            seed=int(d.get("seed", 0)), data_dir=d.get("data_dir") or None,
                            options=d.get("task_options"),
                            answer_format=answers.check_format(fmt) if fmt else "")


def _reasoning_corpus(task: str) -> Callable[[str, Any], tuple[Pairs, dict[str, Any]]]:
  def pairs(split: str, d: Any) -> tuple[Pairs, dict[str, Any]]:
    problems = problems_from_config({**_plain(d), "corpus": task}, split, task_key="corpus")
    if d.get("chat_template"):  # the question alone: the chat template makes it the user turn (`chat`)
      return [(p.prompt, p.solution) for p in problems], {"problems": len(problems)}
    return [(reasoning_prompt(p), p.solution) for p in problems], {"problems": len(problems)}

  return pairs


def _plain(d: Any) -> dict[str, Any]:
  return d.to_dict() if hasattr(d, "to_dict") else dict(d)


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
                          seed=int(d.get("seed", 0)))
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


Corpus = Callable[[str, Any], tuple[Pairs, dict[str, Any]]]
TEXT_CORPORA: dict[str, Corpus] = {
  "python_reference": _python_reference,
  "pretrain": _pretrain,
  "jsonl": _jsonl,
}


class _Corpora(Mapping):
  """`TEXT_CORPORA` plus every task spec of `task_registry`, looked up when asked (never a copy).

  Iterating lists the text corpora, `reasoning.TASKS` and registered tasks as they are *now*; any other
  reasoning-gym name, file or `module:function` is found by lookup.
  """

  def __getitem__(self, name: str) -> Corpus:
    if name in TEXT_CORPORA:
      return TEXT_CORPORA[name]
    if not task_registry.is_task(name):
      raise KeyError(name)
    return _reasoning_corpus(name)

  def __contains__(self, name: object) -> bool:
    return isinstance(name, str) and (name in TEXT_CORPORA or task_registry.is_task(name))

  def __iter__(self) -> Iterator[str]:
    return iter([*TEXT_CORPORA, *reasoning.TASKS, *task_registry.USER_TASKS])

  def __len__(self) -> int:
    return len(list(iter(self)))


SFT_CORPORA: Mapping[str, Corpus] = _Corpora()
