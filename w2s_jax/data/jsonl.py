"""Reading users' JSONL and Parquet files in the common record shapes, with strict bad-input handling.

Shapes (required fields → type; `id` is optional everywhere and must be unique when present):

| shape        | fields                                                                  |
|--------------|-------------------------------------------------------------------------|
| `w2s`        | `txt` str, `hard_label` int in [0, num_classes); optional `soft_label`   |
|              | (num_classes floats in [0, 1] summing to 1; default one-hot of the label) |
| `sft`        | `prompt` str, `response` str                                            |
| `preference` | `prompt` str, `chosen` str, `rejected` str (chosen != rejected)         |
| `unpaired`   | `prompt` str, `completion` str, `label` bool (KTO's desirable or not)   |
| `rl`         | `prompt` str, `answer` str                                              |

`w2s` is openai/weak-to-strong's record format (sciq, boolq, anthropic_hh, cosmos_qa, amazon_polarity).
Bad input — a line that is not UTF-8 or not a JSON object, a missing or wrongly typed field, empty text,
text with an escaped lone surrogate (`"\\ud800"`, not encodable as UTF-8), text over `max_chars`, a
duplicate id, a label out of range, a pair of identical completions — stops the read with a
`BadRecordError` naming the file, line and field. With `skip_bad_records=True` the record is skipped and
counted instead. A file with no records (empty, or only blank lines), or none left after skipping, is an
error either way (`kind` `empty_file`). A UTF-8 byte order mark at the start of a file is accepted.

Files are opened through `etils.epath`, so a path may also be a URI (`gs://bucket/data/train.jsonl`, or
another scheme epath's fsspec backend knows); Parquet is decoded from the opened file.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from etils import epath

SHAPES: dict[str, dict[str, type]] = {
  "w2s": {"txt": str, "hard_label": int},
  "sft": {"prompt": str, "response": str},
  "preference": {"prompt": str, "chosen": str, "rejected": str},
  "unpaired": {"prompt": str, "completion": str, "label": bool},
  "rl": {"prompt": str, "answer": str},
}


class BadRecordError(ValueError):
  """A record that cannot be trained on; the message names file, line, field and the fix."""

  def __init__(self, path: str, line: int, field: str | None, reason: str, kind: str):
    self.path, self.line, self.field, self.reason, self.kind = str(path), line, field, reason, kind
    where = f"{path}:{line}" + (f": field {field!r}" if field else "")
    fix = ("point the data files at records of this shape" if kind == "empty_file" else
           "fix the record, or set skip_bad_records=True to skip and count bad records")
    super().__init__(f"{where}: {reason} ({fix})")


@dataclasses.dataclass
class ReadStats:
  """What a read kept and skipped.

  Attributes:
    kept: records returned.
    skipped: total records skipped.
    by_kind: skipped records per kind (`utf8`, `json`, `missing`, `type`, `empty`, `too_long`,
      `duplicate_id`, `label`, `identical`).
  """

  kept: int = 0
  skipped: int = 0
  by_kind: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _bad(kind: str, field: str | None, reason: str) -> tuple[str, str | None, str]:
  return kind, field, reason


def check_record(
  obj: Any, shape: str, *, max_chars: int | None = None, num_classes: int = 2
) -> tuple[dict[str, Any] | None, tuple[str, str | None, str] | None]:
  """Validates one decoded record.

  Returns:
    (record, None) with the record normalised (w2s gets `soft_label`), or (None, (kind, field, reason)).
  """
  if not isinstance(obj, dict):
    return None, _bad("json", None, f"expected a JSON object, got {type(obj).__name__}")
  for name, typ in SHAPES[shape].items():
    if name not in obj:
      return None, _bad("missing", name, f"missing (a {shape!r} record needs {sorted(SHAPES[shape])})")
    value = obj[name]
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
      return None, _bad("type", name, f"expected {typ.__name__}, got {type(value).__name__} {value!r:.40}")
    if typ is str:
      if (where := _surrogate_at(value)) is not None:
        return None, _bad("utf8", name, f"lone surrogate {value[where]!r} at character {where}: an escaped "
                          "\\ud800-\\udfff that is not half of a pair is not text")
      if not value.strip():
        return None, _bad("empty", name, "empty text")
      if max_chars is not None and len(value) > max_chars:
        return None, _bad("too_long", name, f"{len(value)} characters > max_chars={max_chars}")
  if "id" in obj and (isinstance(obj["id"], bool) or not isinstance(obj["id"], str | int)):
    return None, _bad("type", "id", f"expected str or int, got {type(obj['id']).__name__}")
  if shape == "preference" and obj["chosen"] == obj["rejected"]:
    return None, _bad("identical", "rejected",
                      "identical to 'chosen': a pair needs two different completions")
  out = dict(obj)
  if shape == "w2s":
    label = obj["hard_label"]
    if not 0 <= label < num_classes:
      return None, _bad("label", "hard_label", f"{label} is outside [0, {num_classes})")
    soft = obj.get("soft_label")
    if soft is None:
      soft = [float(c == label) for c in range(num_classes)]
    elif (not isinstance(soft, list) or len(soft) != num_classes
          or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in soft)):
      return None, _bad("type", "soft_label", f"expected a list of {num_classes} numbers, got {soft!r:.60}")
    elif not all(0.0 <= p <= 1.0 for p in soft) or not math.isclose(sum(soft), 1.0, abs_tol=1e-4):
      return None, _bad("label", "soft_label", f"{soft} is not a probability vector")
    out["soft_label"] = [float(p) for p in soft]
  return out, None


def _surrogate_at(text: str) -> int | None:
  """The index of the first lone surrogate in `text` (JSON's "\\ud800" decodes to one), or None."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    return e.start
  return None


def _read_lines(path: epath.Path):
  with path.open("rb") as f:
    for number, raw in enumerate(f, start=1):
      if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark (some editors write one): not part of the record
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield number, None, _bad("utf8", None, f"not valid UTF-8 (byte {e.start} of the line)")
        continue
      if not line.strip():
        continue  # blank lines (e.g. a trailing newline) are not records
      try:
        yield number, json.loads(line), None
      except json.JSONDecodeError as e:
        yield number, None, _bad("json", None, f"malformed JSON ({e.msg} at column {e.colno})")


def _read_parquet(path: epath.Path):
  import pyarrow.parquet as pq

  with path.open("rb") as f:  # not the URI itself: pyarrow would reach it through its own filesystems
    table = pq.read_table(f)
  for number, obj in enumerate(table.to_pylist(), start=1):
    yield number, obj, None


def read_records(
  path: str | Path | epath.Path,
  shape: str,
  *,
  skip_bad_records: bool = False,
  max_chars: int | None = None,
  num_classes: int = 2,
  stats: ReadStats | None = None,
  seen_ids: dict[Any, str] | None = None,
) -> tuple[list[dict[str, Any]], ReadStats]:
  """Reads and validates a `.jsonl` (line numbers from 1) or `.parquet` file (row numbers from 1).

  Args:
    path: the file: a local path or a URI (`gs://...`).
    shape: a key of `SHAPES`.
    skip_bad_records: skip and count bad records instead of raising `BadRecordError`.
    max_chars: longest allowed text field (None: no limit).
    num_classes: number of classes of `w2s` labels.
    stats: counts to add to (to total several files).
    seen_ids: id → "file:line" of ids already read (duplicates across files are caught too).

  Returns:
    (records, stats).
  """
  if shape not in SHAPES:
    raise ValueError(f"unknown record shape {shape!r}; choose one of {sorted(SHAPES)}")
  path = epath.Path(path)
  stats = stats if stats is not None else ReadStats()
  seen_ids = seen_ids if seen_ids is not None else {}
  rows = _read_parquet(path) if path.suffix == ".parquet" else _read_lines(path)
  out, skipped_before = [], stats.skipped
  for number, obj, problem in rows:
    record = None
    if problem is None:
      record, problem = check_record(obj, shape, max_chars=max_chars, num_classes=num_classes)
    if problem is None and "id" in record:
      if record["id"] in seen_ids:
        first = seen_ids[record["id"]]
        problem = _bad("duplicate_id", "id", f"duplicate id {record['id']!r} (first at {first})")
      else:
        seen_ids[record["id"]] = f"{path}:{number}"
    if problem is not None:
      kind, field, reason = problem
      if not skip_bad_records:
        raise BadRecordError(str(path), number, field, reason, kind)
      stats.skipped += 1
      stats.by_kind[kind] += 1
      continue
    out.append(record)
    stats.kept += 1
  if not out:
    skipped = stats.skipped - skipped_before
    raise BadRecordError(str(path), 1, None, "the file holds no records" if not skipped else
                         f"all {skipped} records were bad and skipped: nothing is left to train on",
                         "empty_file")
  return out, stats
