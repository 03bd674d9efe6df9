"""Loading experiment config files (`configs/NAME.py`) outside absl, e.g. in notebooks and tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_config(name_or_path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
  """Builds a config as `--config=configs/NAME.py:ARG` does.

  Args:
    name_or_path: a config name in the repository's `configs/` folder (e.g. "quickstart") or a path.
    arg: the config's argument (e.g. "smoke"), or None.
  """
  path = Path(name_or_path)
  if path.suffix != ".py":
    path = CONFIG_DIR / f"{name_or_path}.py"
  if not path.exists():
    raise FileNotFoundError(f"no config file {path}")
  spec = importlib.util.spec_from_file_location(f"w2s_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
