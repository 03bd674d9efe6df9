"""Loading experiment config files (`configs/NAME.py`) outside absl, e.g. in notebooks and tests."""

from __future__ import annotations

import functools
import importlib.util
import json
import types
from pathlib import Path
from typing import Any

import ml_collections
from etils import epath

from w2s_jax.atomic_file import write_atomic

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


# Files in configs/ that are not configs: the shared sections the configs build on.
SHARED_MODULES = ("common",)


def config_names() -> list[str]:
  """The configs in `configs/` (the names `--config=configs/NAME.py` takes), sorted."""
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in SHARED_MODULES)


@functools.cache
def load_common() -> types.ModuleType:
  """`configs/common.py`, the shared config sections (optimizer, mesh, loop keys, the `sft` sub-run)."""
  spec = importlib.util.spec_from_file_location("w2s_config_common", CONFIG_DIR / "common.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigError(ValueError):
  """A config value, or a change of config on resume, that the run refuses; the message names the key."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested dict as {"dotted.key": leaf value}."""
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def changed_keys(
  config: ml_collections.ConfigDict, workdir: str | Path, *, may_change: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
  """The settings of `config` that differ from `workdir/config.json` (none if there is no such file).

  Args:
    config: the config of the run about to start.
    workdir: its folder.
    may_change: keys or dotted prefixes (e.g. `mesh`, `data.eval_batches`) left out of the comparison.

  Returns:
    (key, old value, new value) per changed key, sorted by key; "<absent>" for a key only one side has.
    A key set to None counts as absent: None means "unset, the default", so declaring a new unset
    shortcut (e.g. `model.dtype`) does not make older runs' folders refuse to resume.
  """
  previous = epath.Path(workdir) / "config.json"
  if not previous.exists():
    return []
  free = lambda k: any(k == p or k.startswith(p + ".") for p in may_change)
  keep = lambda k, v: v is not None and not free(k)
  old = {k: v for k, v in flatten(json.loads(previous.read_text())).items() if keep(k, v)}
  new = {k: v for k, v in flatten(json.loads(config.to_json_best_effort())).items() if keep(k, v)}
  return [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted(old.keys() | new.keys())
          if old.get(k, "<absent>") != new.get(k, "<absent>")]


def check_resume(
  config: ml_collections.ConfigDict, workdir: str | Path, *, may_change: tuple[str, ...], hint: str = ""
) -> None:
  """Raises ConfigError naming every changed key when `workdir` was started with other settings.

  Args:
    config: the config of the run about to start.
    workdir: its folder (nothing is written).
    may_change: keys or dotted prefixes a resumed run may change (see `changed_keys`).
    hint: how to override, appended to the message.
  """
  if changed := changed_keys(config, workdir, may_change=may_change):
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed)
    raise ConfigError(f"{workdir} was started with other settings ({shown}); rerun with its config.json or "
                      f"use a new --workdir{hint} (only {', '.join(may_change)} may change on resume)")


def has_progress(workdir: str | Path) -> bool:
  """Whether `workdir` holds work a rerun would resume: a saved checkpoint step (in it or in a sub-run's
  folder one level down, e.g. an RL run's SFT start), a non-empty `metrics.jsonl` or a pipeline's
  `results.json`. A folder where a run stopped before training (a usage or length error) holds none, so a
  corrected rerun may change settings."""
  workdir = epath.Path(workdir)  # a local folder or a gs:// one
  if not workdir.is_dir():
    return False
  if (workdir / "results.json").is_file():
    return True
  for ckpt in (workdir / "checkpoints", *workdir.glob("*/checkpoints")):
    if ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir()):
      return True
  return any(f.is_file() and f.stat().length > 0
             for f in (workdir / "metrics.jsonl", *workdir.glob("*/metrics.jsonl")))


def start_workdir(
  config: ml_collections.ConfigDict, workdir: str | Path, *, may_change: tuple[str, ...] | None = None
) -> epath.Path:
  """Creates `workdir` and writes the resolved config to `workdir/config.json` (atomically).

  Every pipeline calls this first, so a run's folder always says what produced it.

  Args:
    config: the run's config.
    workdir: its folder.
    may_change: for a pipeline that reuses finished work found in `workdir` (e.g. a sweep's trainings),
      the keys (or dotted prefixes) a resumed run may change (e.g. `seeds`: more seeds); any other
      difference from the `config.json` already there raises before anything is written, so results
      made under other settings are never reused. None: no check.

  Raises:
    ConfigError: a ValueError naming the changed keys, when `may_change` is given and the folder's
      config differs.
  """
  workdir = epath.Path(workdir)
  if may_change is not None:
    check_resume(config, workdir, may_change=may_change)
  write_config(config, workdir)
  return workdir


def write_config(config: ml_collections.ConfigDict, workdir: str | Path) -> None:
  """Writes `workdir/config.json` atomically (`atomic_file.write_atomic`; local folders or `gs://`)."""
  text = json.dumps(json.loads(config.to_json_best_effort()), indent=2)
  write_atomic(epath.Path(workdir) / "config.json", text)
