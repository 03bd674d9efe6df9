"""Entry point: `python -m w2s_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.k=v]`.

The console script `w2s-jax` is the same. Rerunning a command on the same workdir resumes it, unless
the settings that alter training changed (then it stops and names them; `--allow_config_change` resumes
anyway). Bad flags and config values stop before any work with a one-line `error:` and exit status 2;
`--help` lists the configs.
Multi-process runs (TPU pods, GPU clusters, or several CPU processes) call `jax.distributed.initialize`
when `config.distributed.num_processes > 1` or the JAX_COORDINATOR_ADDRESS environment variable is set.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from w2s_jax.config_files import CONFIG_DIR, ConfigError, check_resume, config_names, has_progress
from w2s_jax.train.config_lib import renamed_key, validate_config
from w2s_jax.train.loop import train
from w2s_jax.train.preference_tasks import preference_setup
from w2s_jax.train.pretrain import cache_root
from w2s_jax.train.tasks import sft_setup
from w2s_jax.w2s.report import ladder_table, results_table

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (resumed if it holds checkpoints).")
_ALLOW_CHANGE = flags.DEFINE_bool(
  "allow_config_change", False,
  "Resume a workdir although settings that alter training (optimizer, batch, data, model) changed.")
flags.mark_flags_as_required(["config", "workdir"])

USAGE_EXIT = 2
# Keys (or dotted prefixes) a resumed run may change: they do not alter what is trained.
RESUME_MAY_CHANGE = (
  "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
  "max_nonfinite_streak", "cpu_devices", "distributed", "mesh", "sharding", "step_form", "eval",
  "data.eval_batches",
)
# Pipelines that check their own folder on resume (with their own `may_change`, e.g. more seeds).
SELF_CHECKED = ("w2s_sweep",)

# Tasks that are one `train.loop.train` run: task name -> the function turning the config into its `Setup`.
TASKS = {"sft": sft_setup, "preference": preference_setup}
# Tasks that are whole pipelines rather than one `train.loop.train` run: task name -> "module:function",
# imported on use. Each function is `fn(config, workdir) -> summary` and resumes from `workdir`.
PIPELINES = {
  "w2s_sweep": "w2s_jax.w2s.run:run_sweep",
  "rl": "w2s_jax.rl.loop:train_rl",
  "prm_pipeline": "w2s_jax.prm.pipeline:run_prm",
  "debate_w2s": "w2s_jax.recipes.debate:run_debate",
  "deception": "w2s_jax.recipes.deception:run_deception",
  "w2s_reasoning": "w2s_jax.recipes.w2s_reasoning:run_w2s_reasoning",
  "easy_to_hard": "w2s_jax.recipes.easy_to_hard:run_easy_to_hard",
  "onpolicy_distill": "w2s_jax.w2s.onpolicy_distill:run_onpolicy_distill",
  "w2sr": "w2s_jax.recipes.w2sr:run_w2sr",
  "delta_learning": "w2s_jax.recipes.delta_learning:run_delta_learning",
}


def _maybe_initialize_distributed(config) -> None:
  dist = config.get("distributed")
  if dist is not None and dist.num_processes > 1:
    jax.distributed.initialize(
      coordinator_address=dist.coordinator_address,
      num_processes=dist.num_processes,
      process_id=dist.process_id,
      local_device_ids=None,
    )
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


def _usage_exit(message: str) -> None:
  """Prints `error: message` (one line) to stderr and exits with status 2."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(USAGE_EXIT)


def _check_before_work(config, workdir: str) -> None:
  """Validates the config, the task and (on resume) the settings; a usage error exits with status 2."""
  task = config.get("task")
  one_loop = task not in PIPELINES or task in ("rl", "onpolicy_distill")
  try:
    validate_config(config, workdir, loop_cadences=one_loop)
    if task not in SELF_CHECKED and not _ALLOW_CHANGE.value and has_progress(workdir):
      check_resume(config, workdir, may_change=RESUME_MAY_CHANGE, hint=", or pass --allow_config_change")
  except ConfigError as e:
    _usage_exit(str(e))


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  try:
    config.get("task")
  except OSError as e:  # ml_collections defers a missing or unloadable config file to first use
    _usage_exit(f"cannot load --config: {str(e).strip().splitlines()[-1].strip()}")
  _check_before_work(config, _WORKDIR.value)
  if config.get("cpu_devices"):
    jax.config.update("jax_num_cpu_devices", int(config.cpu_devices))
  # Sweeps compile the same step for many runs: keep compiled programs across runs and processes
  # (in a folder of the caller's, JAX_COMPILATION_CACHE_DIR, when set: the tests share one across a run).
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  _maybe_initialize_distributed(config)
  logging.set_verbosity(logging.WARNING)
  runner = PIPELINES.get(config.task)
  if runner is not None:
    module, fn = runner.split(":")
    summary = getattr(importlib.import_module(module), fn)(config, _WORKDIR.value)
    if jax.process_index() == 0 and summary is not None:
      print(_report(config.task, summary))
    return
  if config.task not in TASKS:
    _usage_exit(f"config.task={config.task!r} is unknown; choose one of {sorted([*TASKS, *PIPELINES])}")
  summary = train(config, _WORKDIR.value, TASKS[config.task](config))
  if jax.process_index() == 0:
    print(json.dumps({k: summary.get(k) for k in ("final_step", "last", "eval", "wall_s")}, default=str))


def _report(task: str, summary: Any) -> str:
  """What a pipeline's run prints last: its tables for the sweep, else its summary as one JSON line."""
  if task == "w2s_sweep":
    return ladder_table(summary) + "\n\n" + results_table(summary)
  table = ""
  if isinstance(summary, dict):
    keys = ("final_step", "last", "eval_initial", "eval", "wall_s") if task == "rl" else summary.keys()
    table = summary.get("table") if isinstance(summary.get("table"), str) else ""
    summary = {k: summary.get(k) for k in keys if k not in ("state", "table")}
  # A pipeline's Markdown results table (when it makes one) is printed as is, above the JSON line.
  return (table + "\n\n" if table else "") + json.dumps(summary, default=str)


def _help_text() -> str:
  names = config_names()
  return (f"{__doc__}\nUsage: python -m w2s_jax.main --config=configs/NAME.py[:smoke] --workdir=DIR "
          "[--config.KEY=VALUE ...] [--allow_config_change]\n\n"
          f"Configs (in {CONFIG_DIR}; each takes the arg `smoke`):\n  " + "\n  ".join(names) + "\n")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with `--help` (configs listed, exit 0) and one-line usage errors (exit 2)."""
  if any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?") for a in argv[1:]):
    print(_help_text())
    sys.exit(0)
  _check_renamed_flags(argv[1:])
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown `--config.KEY` (with a suggestion)
    key, *rest = str(e).encode().decode("unicode_escape").strip("'").splitlines() or [""]
    _usage_exit(f"unknown config key {key.strip(chr(39))!r}; {' '.join(rest) or 'see --help'}")
  except Exception as e:  # noqa: BLE001 (any other flag or config-file failure is a usage error)
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # A config file that fails to load carries its traceback: keep the flag and the exception's line.
    _usage_exit(lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}")


def _check_renamed_flags(args: list[str]) -> None:
  """A `--config.KEY` flag of an old spelling (`config_lib.OLD_KEYS`) is a usage error naming the new key."""
  for arg in args:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0]
      new = renamed_key(key)
      if new is not None:
        _usage_exit(f"config.{key} was renamed config.{new}")


def run() -> None:
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
