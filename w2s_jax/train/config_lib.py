"""Shared config sections, so experiment configs and pipelines state only what differs."""

from __future__ import annotations

import json
import math
from typing import Any

import ml_collections

from w2s_jax.config_files import ConfigError, flatten


def train_defaults(
  *, total_steps: int, batch_size: int, lr: float, seed: int = 0
) -> ml_collections.ConfigDict:
  """The loop's keys (`w2s_jax.train.loop.train`) with defaults for a single-process CPU run."""
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
  c.optimizer = ml_collections.ConfigDict(dict(
    name="adamw", lr=lr, schedule="cosine", warmup_steps=max(total_steps // 20, 1), end_lr_frac=0.1,
    weight_decay=0.01, b1=0.9, b2=0.99, eps=1e-8, clip_norm=1.0,
  ))
  return c


def distributed_defaults() -> ml_collections.ConfigDict:
  """The `distributed` section `w2s_jax.main` reads: one process unless set (or JAX_COORDINATOR_ADDRESS)."""
  return ml_collections.ConfigDict({"num_processes": 1, "process_id": 0, "coordinator_address": ""})


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

  Positive sizes (`batch_size`, `grad_accum_steps`, ... in any section), a positive `total_steps`
  (except for staged pipelines), `*_every_steps` >= 0 (0 = off), finite positive learning rates
  (`lr`, `*_lr`), and a non-empty workdir.

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
