"""Shared config sections, so experiment configs and pipelines state only what differs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference

from w2s_jax.config_files import ConfigError, flatten


def optimizer_section(
  lr: float, *, warmup_steps: int, schedule: str = "cosine", end_lr_frac: float = 0.1,
  weight_decay: float = 0.01, b1: float = 0.9, b2: float = 0.99, eps: float = 1e-8, clip_norm: float = 1.0,
) -> ml_collections.ConfigDict:
  """An `optimizer` section (`w2s_jax.train.optim.make_optimizer`'s keys): AdamW, cosine decay by default."""
  return ml_collections.ConfigDict(dict(
    name="adamw", lr=lr, schedule=schedule, warmup_steps=warmup_steps, end_lr_frac=end_lr_frac,
    weight_decay=weight_decay, b1=b1, b2=b2, eps=eps, clip_norm=clip_norm,
  ))


def default_warmup_steps(total_steps: int | FieldReference) -> int | FieldReference:
  """max(total_steps // 20, 1): 5 % of the steps, at least one.

  Given a `FieldReference` (e.g. `c.train.get_ref("total_steps")`) the result is one too, so it follows
  later changes of that field (a `--config.train.total_steps` flag). `FieldReference` has no `max`, so
  there it is spelled `x + 1 // (x + 1)` with x = total_steps // 20: the same as max(x, 1) for x >= 0.
  """
  if isinstance(total_steps, FieldReference):
    five_percent = total_steps // 20
    return five_percent + 1 // (five_percent + 1)
  return max(total_steps // 20, 1)


def train_defaults(
  *, total_steps: int, batch_size: int, optimizer: Mapping[str, Any] | None = None, lr: float | None = None,
  seed: int = 0,
) -> ml_collections.ConfigDict:
  """The loop's keys (`w2s_jax.train.loop.train`) with defaults for a single-process CPU run.

  Args:
    total_steps: the run's steps.
    batch_size: rows (or pairs) per step.
    optimizer: the sub-run's `optimizer` section from its config, copied as is; or None to build
      `optimizer_section(lr, warmup_steps=total_steps // 20)` (sub-runs whose config names only `lr`).
    lr: the peak learning rate when `optimizer` is None.
    seed: the training seed.
  """
  if (optimizer is None) == (lr is None):
    raise ValueError("train_defaults takes an `optimizer` section or an `lr`, exactly one")
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.total_steps = total_steps
  c.batch_size = batch_size
  c.grad_accum_steps = 1
  c.step_form = "jit"
  c.log_every_steps = 10
  c.eval_every_steps = 0
  c.checkpoint_every_steps = max(total_steps // 2, 1)
  c.keep_checkpoints = 1
  c.max_nonfinite_streak = 5
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.sharding = "dp"
  c.optimizer = (ml_collections.ConfigDict(dict(optimizer)) if optimizer is not None
                 else optimizer_section(lr, warmup_steps=default_warmup_steps(total_steps)))
  return c


def distributed_defaults() -> ml_collections.ConfigDict:
  """The `distributed` section `w2s_jax.main` reads: one process unless set (or JAX_COORDINATOR_ADDRESS)."""
  return ml_collections.ConfigDict({"num_processes": 1, "process_id": 0, "coordinator_address": ""})


# Old spellings -> the one key of the shared vocabulary (README "Config keys"). A dotted pattern; `*`
# stands for one section name (e.g. `models.*.steps` is `models.weak.steps`). Setting an old key, in a
# config file or as a flag, stops the run with a message naming the new one.
_SFT_SECTIONS = ("sft", "teacher.sft", "student.sft", "weak.sft", "strong.sft", "w2sr.sft")
OLD_KEYS = {
  "data_seed": "data.seed",
  "data.data_seed": "data.seed",
  "data_task": "data.task",
  "data.n_test": "data.eval_size",
  "data.test_size": "data.eval_size",
  "eval_problems": "data.eval_size",
  "data.n_train": "data.train_size",
  "train.steps": "train.total_steps",
  "ladder.steps": "ladder.total_steps",
  "rl.iterations": "rl.total_steps",
  "policy.steps": "policy.total_steps",
  "verifier.steps": "verifier.total_steps",
  "models.*.steps": "models.*.total_steps",
  "weak.steps": "weak.total_steps",
  "strong.start.steps": "strong.start.total_steps",
  "stage1.steps": "stage1.total_steps",
  "stage2.steps": "stage2.total_steps",
  "model.sft.steps": "model.sft.total_steps",  # the preference configs' SFT start
  "model.sft.lr": "model.sft.optimizer.lr",
  "dpo.lr": "dpo.optimizer.lr",
  "sft_on_chosen.lr": "sft_on_chosen.optimizer.lr",
  "policy.lr": "policy.optimizer.lr",
  **{f"{s}.lr": f"{s}.optimizer.lr" for s in ("weak", "strong.start", "stage1", "stage2")},
  "prm.lr": "prm.optimizer.lr",
  "prm.warmup_steps": "prm.optimizer.warmup_steps",
  "loss.kind": "loss.name",
  "eval.every_steps": "eval_every_steps",
  "objective.*": "loss.*",  # the SFT / preference / PRM runs' loss section
  "stage2.objective.*": "stage2.loss.*",
  "distill.estimator": "loss.name",
  "distill.beta": "loss.beta",
  "train.reduction": "loss.reduction",
  **{f"{s}.{k}": f"{s}.optimizer.{k}" for s in _SFT_SECTIONS for k in ("lr", "warmup_steps")},
}


def renamed_key(key: str) -> str | None:
  """The new spelling of `key` (a dotted config path) if it is an old one of `OLD_KEYS`, else None."""
  parts = key.split(".")
  for old, new in OLD_KEYS.items():
    pattern = old.split(".")
    if len(pattern) == len(parts) and all(p in ("*", k) for p, k in zip(pattern, parts)):
      names = iter(k for p, k in zip(pattern, parts) if p == "*")  # what each `*` stood for, in order
      return ".".join(next(names) if p == "*" else p for p in new.split("."))
  return None


def check_old_keys(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the new key when `config` sets an old spelling of `OLD_KEYS`."""
  for key in _paths(config.to_dict()):
    new = renamed_key(key)
    if new is not None:
      raise ConfigError(f"config.{key} was renamed config.{new}")


def _paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
  """Every dotted path in a nested dict, sections included (`a`, `a.b`, ...)."""
  out = []
  for name, value in tree.items():
    out.append(prefix + name)
    if isinstance(value, dict):
      out += _paths(value, f"{prefix}{name}.")
  return out


# Keys that must be positive integers wherever they appear (a section's `batch_size` too).
_POSITIVE_INTS = (
  "batch_size", "grad_accum_steps", "minibatch_size", "keep_checkpoints", "max_nonfinite_streak",
)
# Pipelines whose top-level `total_steps` is unused (each stage has its own `steps`).
STAGED_PIPELINES = ("w2s_reasoning", "easy_to_hard")


def _bad(key: str, value: Any, want: str) -> ConfigError:
  return ConfigError(f"config.{key}={value!r}: {want} (set it with --config.{key}=...)")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def validate_config(
  config: ml_collections.ConfigDict, workdir: str | None = None, *, loop_cadences: bool = True
) -> None:
  """Checks the values every run relies on before any work, naming the first bad key.

  No old spelling of a renamed key (`OLD_KEYS`); positive sizes (`batch_size`, `grad_accum_steps`, ...
  in any section), a positive `total_steps` (except for staged pipelines), `*_every_steps` >= 0 (0 = off),
  finite positive learning rates (`lr`, `*_lr`), and a non-empty workdir.

  Args:
    config: the run's config.
    workdir: its output folder, or None not to check it.
    loop_cadences: the task runs one training loop that uses the top-level `checkpoint_every_steps`
      and `log_every_steps`, so they must be positive (sweeps set 0: each training saves at its end).

  Raises:
    ConfigError: a one-line message naming the key, its value and what it must be.
  """
  if workdir is not None and not str(workdir).strip():
    raise ConfigError("--workdir is empty: name the run's output folder, e.g. --workdir=/tmp/run")
  check_old_keys(config)
  flat = flatten(json.loads(config.to_json_best_effort()))
  top = ["total_steps"] if config.get("task") not in STAGED_PIPELINES else []
  top += ["checkpoint_every_steps", "log_every_steps"] if loop_cadences else []
  for key in top:
    if key in flat and not (_is_int(flat[key]) and flat[key] > 0):
      raise _bad(key, flat[key], "must be a positive integer")
  for key, value in flat.items():
    name = key.rsplit(".", 1)[-1]
    if name in _POSITIVE_INTS and not (_is_int(value) and value > 0):
      raise _bad(key, value, "must be a positive integer")
    if name.endswith("_every_steps") and not (_is_int(value) and value >= 0):
      raise _bad(key, value, "must be an integer >= 0 (0 turns it off)")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if (name == "lr" or name.endswith("_lr")) and not (is_number and math.isfinite(value) and value > 0):
      raise _bad(key, value, "must be a finite learning rate > 0")
