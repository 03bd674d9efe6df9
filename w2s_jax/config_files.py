"""Loading experiment config files (`configs/NAME.py`) outside absl, e.g. in notebooks and tests."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

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


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def start_workdir(
  config: ml_collections.ConfigDict, workdir: str | Path, *, may_change: tuple[str, ...] | None = None
) -> Path:
  """Creates `workdir` and writes the resolved config to `workdir/config.json` (atomically).

  Every pipeline calls this first, so a run's folder always says what produced it.

  Args:
    config: the run's config.
    workdir: its folder.
    may_change: for a pipeline that reuses finished work found in `workdir` (e.g. a sweep's trainings),
      the top-level keys a resumed run may change (e.g. `seeds`: more seeds); any other difference from
      the `config.json` already there raises, so results made under other settings are never reused.
      None: no check.

  Raises:
    ValueError: naming the changed keys, when `may_change` is given and the folder's config differs.
  """
  workdir = Path(workdir)
  previous = workdir / "config.json"
  if may_change is not None and previous.exists():
    old = {k: v for k, v in _flatten(json.loads(previous.read_text())).items()
           if k.split(".")[0] not in may_change}
    new = {k: v for k, v in _flatten(json.loads(config.to_json_best_effort())).items()
           if k.split(".")[0] not in may_change}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if changed:
      shown = ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in changed[:5])
      raise ValueError(f"{workdir} holds results made with other settings ({shown}"
                       f"{', ...' if len(changed) > 5 else ''}); rerun with its config.json or use a new "
                       f"--workdir (only {', '.join(may_change)} may change on resume)")
  workdir.mkdir(parents=True, exist_ok=True)
  tmp = workdir / f".config.json.{os.getpid()}.tmp"
  tmp.write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=2))
  os.replace(tmp, workdir / "config.json")
  return workdir
