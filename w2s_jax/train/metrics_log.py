"""Where metrics go: `metrics.jsonl` (one JSON object per logged step) and TensorBoard event files.

On resume from step S the writer first drops every line after S (and any half-written last line left
by a killed run), so the file reads as if the run had never stopped.

Folders are `etils.epath` paths, so a workdir may be `gs://bucket/run` (or another scheme epath knows:
`s3://`, ...), read and written through epath's backend (`tf.io.gfile` when TensorFlow is installed,
else fsspec, which needs `gcsfs` for `gs://`). Object stores cannot append: on a remote folder the writer
keeps the file's text and rewrites the whole file at most every `REMOTE_FLUSH_S` seconds and at
`flush()` / `close()`. TensorBoard events go through tensorboardX, which writes `gs://` itself (it needs
`google-cloud-storage`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from w2s_jax.atomic_file import is_remote

REMOTE_FLUSH_S = 10.0


def _clean(value: Any) -> Any:
  value = np.asarray(value)
  if value.ndim:
    return value.tolist()
  value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep them visible rather than silently dropped.
  return value


def _kept_lines(path: epath.Path, step: int) -> list[str]:
  """The complete lines of `path` whose `step` is <= `step` (up to the first damaged line)."""
  if not path.exists():
    return []
  kept = []
  for line in path.read_text().splitlines(keepends=True):
    if not line.endswith("\n"):
      break  # a line cut by a kill
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      break
    if record.get("step", -1) <= step:
      kept.append(line)
  return kept


def truncate_after(path: epath.PathLike, step: int) -> int:
  """Keeps only the complete lines of `path` whose `step` is <= `step`; returns how many were kept."""
  path = epath.Path(path)
  if not path.exists():
    return 0
  kept = _kept_lines(path, step)
  if is_remote(path):  # an object is replaced whole by a write: no temporary file needed
    path.write_text("".join(kept))
  else:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
  return len(kept)


class MetricsWriter:
  """Appends metrics to `metrics.jsonl` and, when `tensorboard` is set, to TensorBoard events."""

  def __init__(self, workdir: epath.PathLike, *, start_step: int = 0, filename: str = "metrics.jsonl",
               tensorboard: bool = True):
    workdir = epath.Path(workdir)
    self.path = workdir / filename
    self.kept = truncate_after(self.path, start_step)  # records of steps <= start_step kept on resume
    self._remote = is_remote(self.path)
    self._lines = _kept_lines(self.path, start_step) if self._remote else []
    self._file = None if self._remote else self.path.open("a")
    self._uploaded = time.monotonic()
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter

      # purge_step drops events a killed run wrote after the checkpoint we resume from.
      self._tb = SummaryWriter(os.fspath(workdir / "tensorboard"), purge_step=start_step or None)

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
    line = json.dumps(record) + "\n"
    if self._remote:
      self._lines.append(line)
      if time.monotonic() - self._uploaded >= REMOTE_FLUSH_S:
        self._upload()
    else:
      self._file.write(line)
      self._file.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
    return record

  def _upload(self) -> None:
    self.path.write_text("".join(self._lines))
    self._uploaded = time.monotonic()

  def flush(self) -> None:
    if self._remote:
      self._upload()
    else:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._remote:
      self._upload()
    else:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
