"""Shared config sections, so experiment configs and pipelines state only what differs."""

from __future__ import annotations

import ml_collections


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
