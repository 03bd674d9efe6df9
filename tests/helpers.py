"""Shared test helpers: loading config files by path."""

import importlib.util
from pathlib import Path

import ml_collections

ROOT = Path(__file__).resolve().parents[1]


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Builds `configs/<name>.py`'s config with `arg`, as `--config=configs/<name>.py:<arg>` does."""
  path = ROOT / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
