"""TFDS builders, written as array_record and read with `tfds.data_source` — TensorFlow never imported.

Registered on `import w2s_jax.data` (names and configs; the first config is the default):

| builder         | configs                                          | features                             |
|-----------------|--------------------------------------------------|--------------------------------------|
| `w2s_reasoning` | `gsm_symbolic`, `chain_sum`, `gcd`,              | id, task, prompt, answer, steps,     |
|                 | `base_conversion` (+ `*_small` slices for tests) | solution, metadata                   |
| `w2s_verify`    | `chain_sum` (easy), `gcd` (medium),              | id, txt, hard_label, soft_label,     |
|                 | `gsm_symbolic` (hard) (+ `*_small`)              | task, question, candidate, distractor|
| `w2s_pretrain`  | `small` (~6 MB), `large` (~180 MB), `tiny`       | id, source, text                     |

`JsonlDataset` (not registered: it has no data of its own) builds users' JSONL/Parquet files of one
shape (`jsonl.SHAPES`) into the same format. Every builder here defaults to `file_format="array_record"`;
text comes back as bytes (`decode_record` turns it into str). Never call `as_dataset` (it needs TF).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from w2s_jax.data import corpus, jsonl, reasoning, w2s_sets

_TEXT = tfds.features.Text


class _ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Defaults `file_format` to array_record (readable without TensorFlow)."""

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)


@dataclasses.dataclass(eq=False)
class SizedConfig(tfds.core.BuilderConfig):
  """A task and split sizes."""

  task: str = ""
  train_size: int = 0
  test_size: int = 0
  seed: int = 0


def _sized(task: str, train: int, test: int, description: str, name: str | None = None) -> SizedConfig:
  return SizedConfig(name=name or task, description=description, task=task, train_size=train, test_size=test)


class W2sReasoning(_ArrayRecordBuilder):
  """reasoning-gym problems with answers and worked solutions split into steps (`reasoning.TASKS`)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
    _sized("gsm_symbolic", 5000, 500, "GSM8K-derived word problems with worked solutions (hard)."),
    _sized("chain_sum", 5000, 500, "Sums and differences of 2-5 integers; running totals (easy)."),
    _sized("gcd", 5000, 500, "GCD of two integers by Euclid's algorithm (medium)."),
    _sized("base_conversion", 5000, 500, "Base conversion via base 10 (harder)."),
  ] + [_sized(t, 64, 16, f"64/16-problem slice of {t} (tests)", f"{t}_small") for t in reasoning.TASKS]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
      "id": _TEXT(), "task": _TEXT(), "prompt": _TEXT(), "answer": _TEXT(),
      "steps": tfds.features.Sequence(_TEXT()), "solution": _TEXT(), "metadata": _TEXT(),
    }), description="reasoning-gym problems with worked solutions; score with w2s_jax.data.reasoning.score")

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    train = reasoning.generate(c.task, "train", c.train_size, seed=c.seed)
    test = reasoning.generate(c.task, "test", c.test_size, seed=c.seed, exclude={p.prompt for p in train})
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, problems):
    for p in problems:
      fields = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("scorer", "answer_format")}
      yield p.id, {**fields, "steps": list(p.steps), "solution": p.solution}  # the tasks' own scorer, format


class W2sVerify(_ArrayRecordBuilder):
  """Is the candidate the answer? openai/weak-to-strong records (`txt`, `hard_label`, `soft_label`)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
    _sized("chain_sum", 4000, 1000, "Candidate totals of 2-5 term sums (easy)."),
    _sized("gcd", 4000, 1000, "Candidate GCDs of two integers (medium)."),
    _sized("gsm_symbolic", 4000, 1000, "Candidate answers to GSM8K-derived word problems (hard)."),
  ] + [_sized(t, 64, 32, f"64/32-record slice of {t} (tests)", f"{t}_small") for t in w2s_sets.W2S_TASKS]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
      "id": _TEXT(), "txt": _TEXT(), "hard_label": np.int64,
      "soft_label": tfds.features.Tensor(shape=(2,), dtype=np.float32),
      "task": _TEXT(), "question": _TEXT(), "candidate": _TEXT(), "distractor": _TEXT(),
    }), description="weak-to-strong answer-verification sets over reasoning-gym tasks")

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    train, test = w2s_sets.generate_splits(c.task, c.train_size, c.test_size, seed=c.seed)
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, records):
    for r in records:
      yield r["id"], r


@dataclasses.dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
  """Pretraining corpus mix (see `corpus.documents`)."""

  problems_per_task: int = 0
  qa_per_task: int = 0
  with_docstrings: bool = False
  test_frac: float = 0.01
  seed: int = 0


class W2sPretrain(_ArrayRecordBuilder):
  """Pretraining text: worked reasoning problems, reasoning Q/A, the Python reference and docstrings."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
    CorpusConfig(name="small", description="~6 MB, 17k documents: 2k worked problems/task, 500 Q/A/task, "
                 "Python reference",
                 problems_per_task=2000, qa_per_task=500),
    CorpusConfig(name="large", description="~180 MB: 50k worked problems/task, 20k Q/A/task, reference, "
                 "stdlib docstrings", problems_per_task=50_000, qa_per_task=20_000, with_docstrings=True),
    CorpusConfig(name="tiny", description="a few hundred documents (tests)", problems_per_task=20,
                 qa_per_task=5, test_frac=0.1),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
      "id": _TEXT(), "source": _TEXT(), "text": _TEXT(),
    }), description="pretraining corpus for the from-scratch model ladder")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(False), "test": self._generate_examples(True)}

  def _generate_examples(self, test: bool):
    c = self.builder_config
    docs = corpus.documents(problems_per_task=c.problems_per_task, qa_per_task=c.qa_per_task,
                            with_docstrings=c.with_docstrings, seed=c.seed)
    for doc_id, source, text in docs:
      if corpus.in_test_split(doc_id, c.test_frac) == test:
        yield doc_id, {"id": doc_id, "source": source, "text": text}


@dataclasses.dataclass(eq=False)
class JsonlConfig(tfds.core.BuilderConfig):
  """Users' files: `files` maps split → list of .jsonl/.parquet paths of one `shape`."""

  shape: str = "sft"
  files: tuple[tuple[str, tuple[str, ...]], ...] = ()
  skip_bad_records: bool = False
  max_chars: int | None = None


_SHAPE_FEATURES = {
  "w2s": {"txt": _TEXT(), "hard_label": np.int64,
          "soft_label": tfds.features.Tensor(shape=(2,), dtype=np.float32)},
  "sft": {"prompt": _TEXT(), "response": _TEXT()},
  "preference": {"prompt": _TEXT(), "chosen": _TEXT(), "rejected": _TEXT()},
  "rl": {"prompt": _TEXT(), "answer": _TEXT()},
}


class JsonlDataset(_ArrayRecordBuilder, skip_registration=True):
  """Users' JSONL/Parquet files of one shape, validated by `jsonl.read_records`.

  Example:
    config = JsonlConfig(name="my_sft", shape="sft", files=(("train", ("a.jsonl",)),))
    builder = JsonlDataset(config=config, data_dir=d); builder.download_and_prepare()
    source = builder.as_data_source()["train"]
  """

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    shape = self.builder_config.shape
    if shape not in _SHAPE_FEATURES:
      raise ValueError(f"unknown record shape {shape!r}; choose one of {sorted(_SHAPE_FEATURES)}")
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
      {"id": _TEXT(), **_SHAPE_FEATURES[shape]}))

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    seen: dict[Any, str] = {}
    self.read_stats = jsonl.ReadStats()
    splits = {}
    for split, paths in c.files:
      records = []
      for path in paths:  # read (and validate) every file before anything is written
        records += jsonl.read_records(path, c.shape, skip_bad_records=c.skip_bad_records,
                                      max_chars=c.max_chars, stats=self.read_stats, seen_ids=seen)[0]
      splits[split] = self._generate_examples(split, records)
    return splits

  def _generate_examples(self, split: str, records):
    fields = ["id", *_SHAPE_FEATURES[self.builder_config.shape]]
    for i, r in enumerate(records):
      key = str(r.get("id", f"{split}-{i}"))
      yield key, {f: (key if f == "id" else r[f]) for f in fields}


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
  "w2s_reasoning": W2sReasoning, "w2s_verify": W2sVerify, "w2s_pretrain": W2sPretrain,
}


def build(name: str, config: str | None = None, *, data_dir: str | Path) -> tfds.core.DatasetBuilder:
  """Builds (if needed) a registered builder's config into `data_dir` and returns the builder."""
  if name not in BUILDERS:
    raise ValueError(f"unknown builder {name!r}; choose one of {sorted(BUILDERS)}")
  builder = BUILDERS[name](config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def read_all(source: Any, limit: int | None = None, chunk: int = 4096) -> list[dict[str, Any]]:
  """The first `limit` (default all) records of a data source, read in chunks (`__getitems__` is faster)."""
  n = len(source) if limit is None else min(limit, len(source))
  out: list[dict[str, Any]] = []
  for start in range(0, n, chunk):
    out += source.__getitems__(list(range(start, min(start + chunk, n))))
  return out


def decode_record(record: dict[str, Any]) -> dict[str, Any]:
  """Turns the bytes a data source returns into str (also inside lists)."""
  def dec(v):
    if isinstance(v, bytes):
      return v.decode("utf-8")
    if isinstance(v, list):
      return [dec(x) for x in v]
    return v

  return {k: dec(v) for k, v in record.items()}
