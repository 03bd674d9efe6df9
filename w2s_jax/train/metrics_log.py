"""Where metrics go: `metrics.jsonl` (one JSON object per logged step) and TensorBoard event files.

On resume from step S the writer first drops every line after S (and any half-written last line left
by a killed run), so the file reads as if the run had never stopped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _clean(value: Any) -> Any:
  value = np.asarray(value)
  if value.ndim:
    return value.tolist()
  value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep them visible rather than silently dropped.
  return value


def truncate_after(path: Path, step: int) -> int:
  """Keeps only the complete lines of `path` whose `step` is <= `step`; returns how many were kept."""
  if not path.exists():
    return 0
  kept = []
  with path.open() as f:
    for line in f:
      if not line.endswith("\n"):
        break  # a line cut by a kill
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        break
      if record.get("step", -1) <= step:
        kept.append(line)
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(kept))
  os.replace(tmp, path)
  return len(kept)


class MetricsWriter:
  """Appends metrics to `metrics.jsonl` and, when `tensorboard` is set, to TensorBoard events."""

  def __init__(self, workdir: str | os.PathLike, *, start_step: int = 0, filename: str = "metrics.jsonl",
               tensorboard: bool = True):
    self.path = Path(workdir) / filename
    self.kept = truncate_after(self.path, start_step)  # records of steps <= start_step kept on resume
    self._file = self.path.open("a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter

      # purge_step drops events a killed run wrote after the checkpoint we resume from.
      self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=start_step or None)

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
    return record

  def flush(self) -> None:
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()
