"""Tasks by name or reference: one registry, resolved when a task is used (never copied at import).

A task spec (`data.task` of RL configs, `data.corpus` of SFT configs) is, in the order tried:

1. a name given to `register_task` (a user function registered from code or a notebook);
2. a task of `reasoning.TASKS` (reasoning-gym with worked solutions: `chain_sum`, `gcd`, …);
3. any reasoning-gym dataset name (`countdown`, `leg_counting`, `spell_backward`, … — `reasoning.gym_names()`;
   the answer alone, no worked steps), with `data.task_options` passed to `reasoning_gym.create_dataset`;
4. a `.jsonl` / `.parquet` file of records `{"prompt": str, "answer": str}` with optional `id`, `steps`
   (list of str), `scorer` (a `reasoning.scorer` name; default `exact`) and `split` (`train` or `eval`;
   records without one go to eval by a stable hash of the prompt, share `task_options.eval_frac`, 0.1);
5. `"module:function"` (or `"path/file.py:function"`): `fn(split, size, seed, **task_options)` returning
   problems as such dicts (or `reasoning.Problem`s); `split` is `"train"` or `"eval"`.

Either import order works: nothing here or in `sft_sources` copies the registry; every lookup reads it.
Problems of an eval split never repeat a prompt of the train split (`problems`).
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from etils import epath

from w2s_jax.data import jsonl, reasoning
from w2s_jax.references import is_reference, resolve_reference

TaskFn = Callable[..., Iterable[Any]]
USER_TASKS: dict[str, TaskFn] = {}
FILE_SUFFIXES = (".jsonl", ".parquet")


def register_task(name: str, fn: TaskFn) -> None:
  """Registers a user task under `name` (`fn(split, size, seed, **options)`; see the module docstring)."""
  if not callable(fn):
    raise TypeError(f"register_task({name!r}, ...) needs a callable, got {type(fn).__name__}")
  USER_TASKS[name] = fn


def kind(spec: str) -> str:
  """What `spec` names: `registered`, `worked` (`reasoning.TASKS`), `gym`, `file` or `function`.

  Raises:
    ValueError: `spec` names nothing (the message lists the ways to name a task).
  """
  if spec in USER_TASKS:
    return "registered"
  if spec in reasoning.TASKS:
    return "worked"
  if spec in reasoning.gym_names():
    return "gym"
  if spec.endswith(FILE_SUFFIXES):
    if not epath.Path(spec).is_file():  # a local file or a URI (gs://...)
      raise ValueError(f"task file {spec!r} does not exist")
    return "file"
  if is_reference(spec):
    return "function"
  raise ValueError(
    f"unknown task {spec!r}: use a reasoning-gym dataset name (e.g. {', '.join(reasoning.gym_names()[:6])}, "
    f"…), one of {sorted(reasoning.TASKS)} (worked solutions), a registered name ({sorted(USER_TASKS)}), "
    "a .jsonl/.parquet file of prompt/answer records, or 'module:function'"
  )


def is_task(spec: str) -> bool:
  """Whether `spec` resolves to a task."""
  try:
    kind(spec)
  except ValueError:
    return False
  return True


def options_dict(options: Any, key: str = "data.task_options") -> dict[str, Any]:
  """Task options from a config value: a dict / ConfigDict, a JSON object string, or ""/None."""
  if options is None or options == "":
    return {}
  if isinstance(options, str):
    try:
      options = json.loads(options)
    except json.JSONDecodeError as e:
      raise ValueError(f"{key}={options!r} is not a JSON object ({e.msg})") from e
  if hasattr(options, "to_dict"):
    options = options.to_dict()
  if not isinstance(options, dict):
    raise ValueError(f"{key} must be a dict (or a JSON object string), got {type(options).__name__}")
  return dict(options)


def _to_problem(obj: Any, spec: str, split: str, index: int, where: str,
                answer_format: str) -> reasoning.Problem:
  """A user record as a `Problem`; errors name `where` (the function or file and the record) and the field."""
  if isinstance(obj, reasoning.Problem):
    return obj
  if not isinstance(obj, dict):
    raise ValueError(f"{where}: expected a dict with 'prompt' and 'answer', got {type(obj).__name__}")
  for field in ("prompt", "answer"):
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
      raise ValueError(f"{where}: field {field!r} must be a non-empty string, got {value!r:.60}")
  steps = obj.get("steps", ())
  if not isinstance(steps, list | tuple) or not all(isinstance(s, str) for s in steps):
    raise ValueError(f"{where}: field 'steps' must be a list of strings")
  scorer = obj.get("scorer") or "exact"
  try:
    reasoning.scorer(scorer)
  except ValueError as e:
    raise ValueError(f"{where}: field 'scorer': {e}") from e
  metadata = obj.get("metadata", {})
  return reasoning.Problem(
    id=str(obj.get("id", f"{spec}-{split}-{index}")), task=spec, prompt=str(obj["prompt"]),
    answer=str(obj["answer"]), steps=tuple(steps), metadata=json.dumps(metadata, default=str),
    scorer=scorer, answer_format=answer_format or str(obj.get("answer_format", "")),
  )


def _file_records(path: str, split: str, eval_frac: float) -> list[tuple[int, dict[str, Any]]]:
  records, _ = jsonl.read_records(path, "rl")
  out = []
  for i, r in enumerate(records, start=1):
    where = r.get("split")
    if where is None:
      where = "eval" if (zlib.crc32(r["prompt"].encode()) % 10_000) < eval_frac * 10_000 else "train"
    elif where not in ("train", "eval", "test"):
      raise ValueError(f"{path}: record {i}: field 'split' must be 'train' or 'eval', got {where!r}")
    if (where == "train") == (split == "train"):
      out.append((i, r))
  return out


def _draw(spec: str, split: str, size: int, seed: int, options: dict[str, Any],
          answer_format: str) -> list[reasoning.Problem]:
  """Up to `size` problems of a registered, file or function task (no dedup yet)."""
  k = kind(spec)
  if k == "file":
    eval_frac = float(options.get("eval_frac", 0.1))
    return [_to_problem(r, spec, split, i, f"{spec}: record {i}", answer_format)
            for i, r in _file_records(spec, split, eval_frac)]
  fn = USER_TASKS[spec] if k == "registered" else resolve_reference(spec, "data.task")
  try:
    out = fn(split, size, seed, **options)
  except TypeError as e:  # most often options (data.task_options) the function does not take
    raise TypeError(f"task {spec!r}: fn({split!r}, {size}, {seed}, **{options}) failed: {e} "
                    "(signature: fn(split, size, seed, **data.task_options))") from e
  if out is None:
    raise ValueError(f"task {spec!r} returned None for split {split!r}: return a list of problem dicts")
  return [_to_problem(obj, spec, split, i, f"task {spec!r} ({split} problem {i})", answer_format)
          for i, obj in enumerate(out)]


@functools.lru_cache(maxsize=8)
def _gym_generate(spec: str, split: str, size: int, seed: int, options_json: str,
                  answer_format: str) -> tuple[reasoning.Problem, ...]:
  return tuple(reasoning.generate(spec, "train" if split == "train" else "test", size, seed=seed,
                                  options=json.loads(options_json), answer_format=answer_format))


def generate(spec: str, split: str, size: int, *, seed: int = 0, options: Any = None,
             answer_format: str = "", exclude: set[str] | None = None) -> list[reasoning.Problem]:
  """`size` distinct problems of task `spec` for `split` ("train" or "eval"), no prompt from `exclude`."""
  options = options_dict(options)
  if kind(spec) in ("worked", "gym"):
    if not exclude:  # the train split is drawn again for every eval split and SFT phase: cache it
      return list(_gym_generate(spec, split, size, seed, json.dumps(options, sort_keys=True), answer_format))
    return reasoning.generate(spec, "train" if split == "train" else "test", size, seed=seed,
                              exclude=exclude, options=options, answer_format=answer_format)
  seen, out = set(exclude or ()), []
  for p in _draw(spec, split, size, seed, options, answer_format):
    if p.prompt not in seen:
      seen.add(p.prompt)
      out.append(p)
    if len(out) == size:
      break
  if not out:
    raise ValueError(f"task {spec!r} gave no {split} problems (after removing repeats and train prompts)")
  return out


def problems(spec: str, split: str, *, size: int, train_size: int = 0, seed: int = 0, options: Any = None,
             answer_format: str = "") -> list[reasoning.Problem]:
  """`size` problems of the train or eval split; eval repeats no prompt of the `train_size` train ones."""
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  kw = dict(seed=seed, options=options, answer_format=answer_format)
  train = generate(spec, "train", size if split == "train" else train_size, **kw) if (
    split == "train" or train_size) else []
  if split == "train":
    return train
  return generate(spec, "eval", size, exclude={p.prompt for p in train}, **kw)
