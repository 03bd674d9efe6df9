"""User code named in a config: `"module:function"` or `"path/to/file.py:function"`, imported at use.

Configs name user tasks, answer extractors, scorers and reward terms this way (`data.task`,
`data.answer_format`, a record's `scorer`, `reward.custom`), so a user's own code runs without a library
edit. `module` is imported with the normal import system (the working directory is on `sys.path` under
`python -m`); a path ending in `.py` is loaded from that file.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def is_reference(spec: str) -> bool:
  """Whether `spec` looks like `"module:function"` (a colon with a name on each side)."""
  module, sep, name = spec.rpartition(":")
  return bool(sep and module and name.isidentifier())


def _import(module: str) -> Any:
  if module.endswith(".py"):
    path = Path(module).resolve()
    if not path.is_file():
      raise FileNotFoundError(f"no file {path}")
    name = f"w2s_user_{path.stem}_{abs(hash(str(path)))}"
    if name not in sys.modules:
      spec = importlib.util.spec_from_file_location(name, path)
      mod = importlib.util.module_from_spec(spec)
      sys.modules[name] = mod
      spec.loader.exec_module(mod)
    return sys.modules[name]
  return importlib.import_module(module)


def resolve_reference(spec: str, key: str) -> Callable[..., Any]:
  """The callable `spec` names.

  Args:
    spec: `"module:function"` or `"path/to/file.py:function"`.
    key: the config key (or record field) that holds `spec`, named in errors.

  Raises:
    ValueError: `spec` is not of that form, the module cannot be imported or has no such callable.
  """
  if not is_reference(spec):
    raise ValueError(f"{key}={spec!r} is not a 'module:function' reference")
  module, _, name = spec.rpartition(":")
  try:
    mod = _import(module)
  except (ImportError, FileNotFoundError) as e:
    raise ValueError(f"{key}={spec!r}: cannot import {module!r} ({e}); run from the folder that holds "
                     "it or put it on PYTHONPATH") from e
  fn = getattr(mod, name, None)
  if not callable(fn):
    raise ValueError(f"{key}={spec!r}: module {module!r} has no function {name!r}")
  return fn
