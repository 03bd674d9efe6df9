"""One way to write a file so that a reader never sees half of it: write a temporary file beside it, then
rename it into place (`os.replace` is atomic on one filesystem). A run killed mid-write leaves the old file
or the new one.

This module imports nothing from the package, so every layer (data, config files, pipelines) can use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, content: str | bytes) -> Path:
  """Writes `content` (text as UTF-8, or bytes) to `path` atomically, creating its folder.

  Args:
    path: the file to (re)write.
    content: the whole new content.

  Returns:
    `path` as a `Path`.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  data = content.encode("utf-8") if isinstance(content, str) else content
  tmp.write_bytes(data)
  os.replace(tmp, path)
  return path
