"""The one shell of multi-run pipelines (debate, deception, w2sr, easy_to_hard, w2s_reasoning, the PRM
pipeline, the W2S sweep): what every pipeline does around its own work.

- the folder and its `config.json`: always `config_files.start_workdir` (with the pipeline's own
  changed-settings check when it reuses finished work, e.g. the sweep), never written by hand.
- `write_json`: any JSON file written atomically (a temporary file renamed into place), so a killed run
  leaves the old file or the new one, never half of one; `finish` writes `results.json` this way, and
  `memo` keeps a pipeline stage's JSON result so a rerun skips the stage.
- `RunLog`: `metrics.jsonl` for pipelines that log real progress as they go (one record per finished
  training, its `step` the count of trainings done so far); pipelines without such progress write none.
- the printed table: `finish` returns the summary with its Markdown `table`, which `main` prints above
  the summary's JSON line.

Paths go through `etils.epath`: these files may live in a `gs://` folder (written whole, see
`atomic_file`). The pipelines' own stages (their sub-runs, caches) may not all: see docs/scaling.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from etils import epath

from w2s_jax.atomic_file import write_atomic


def write_json(path: epath.PathLike, obj: Any, **dumps_kwargs: Any) -> Path | epath.Path:
  """Writes `obj` as JSON to `path` atomically (write a temporary file, then rename it into place)."""
  return write_atomic(path, json.dumps(obj, **dumps_kwargs))


def memo(path: epath.PathLike, build: Callable[[], Any]) -> Any:
  """`build()`'s JSON result, computed once and kept at `path` (written atomically; local or `gs://`)."""
  path = epath.Path(path)
  if path.exists():
    return json.loads(path.read_text())
  write_json(path, build())
  return json.loads(path.read_text())


def finish(workdir: epath.PathLike, results: Mapping[str, Any], *, table: str | None = None,
           default: Any = None) -> dict[str, Any]:
  """Writes `WORKDIR/results.json` atomically.

  Args:
    workdir: the pipeline's folder (local or `gs://`).
    results: the results (JSON-serialisable; `default` converts the rest, as in `json.dumps`).
    table: the Markdown table `main` prints, or None.
    default: `json.dumps`' fallback for other values (e.g. `float` for NumPy scalars).

  Returns:
    {"table": table, "results": the file's path} when a table is given, else `results` itself.
  """
  path = write_json(epath.Path(workdir) / "results.json", results, indent=2, default=default)
  return dict(results) if table is None else {"table": table, "results": str(path)}


class RunLog:
  """`WORKDIR/metrics.jsonl` of a pipeline's finished trainings, rewritten atomically after each one.

  Record i is `{"step": i + 1, "loss": <the training's loss>, ...}`: step counts the trainings finished so
  far, the only steps a multi-run pipeline has.
  """

  def __init__(self, workdir: epath.PathLike, loss_key: str):
    self.path, self.loss_key, self.records = epath.Path(workdir) / "metrics.jsonl", loss_key, []

  def __call__(self, result: Mapping[str, Any]) -> None:
    self.records.append(dict(result))
    lines = [json.dumps({"step": i + 1, "loss": r[self.loss_key], **r}) for i, r in enumerate(self.records)]
    write_atomic(self.path, "\n".join(lines) + "\n")
