"""One way to write a file so that a reader never sees half of it: write a temporary file beside it, then
rename it into place (`os.replace` is atomic on one filesystem). A run killed mid-write leaves the old file
or the new one.

On an object store (a `gs://...` path, through etils.epath) a write replaces the object whole, so the
file is written directly. This module imports nothing from the package, so every layer (data, config
files, pipelines) can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URI path (`gs://...`, `s3://...`, `memory://...`): an object store reached through
  etils.epath, with no appends, renames or file locks."""
  return "://" in os.fspath(path)


def write_atomic(path: str | os.PathLike, content: str | bytes) -> Path | epath.Path:
  """Writes `content` (text as UTF-8, or bytes) to `path` atomically, creating its folder.

  Args:
    path: the file to (re)write: a local path, or a URI such as `gs://bucket/run/config.json`.
    content: the whole new content.

  Returns:
    `path` as a `Path` (an `epath.Path` for a URI).
  """
  data = content.encode("utf-8") if isinstance(content, str) else content
  if is_remote(path):
    remote = epath.Path(path)
    remote.parent.mkdir(parents=True, exist_ok=True)
    remote.write_bytes(data)
    return remote
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)
  return path
