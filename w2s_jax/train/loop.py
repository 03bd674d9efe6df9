"""The SFT / preference / reward-model loop: data → step → log → eval → checkpoint, on the one runtime.

Resume order: if `WORKDIR/checkpoints` holds a complete checkpoint, the run continues from the latest
one (train state, data position and all), otherwise it starts from scratch. The same command on the
same workdir therefore picks up where a killed run left off; losses after the resume point are
bit-identical to an uninterrupted run (batch i is `stream[i]`, the step key is `fold_in(rng, step)`).
SIGTERM saves a checkpoint at the next step boundary and exits with status 143. The mesh, optimizer,
checkpointer, writers, guards and evaluation cadence are the runtime's (`w2s_jax.train.runtime`), and so
is LoRA: with `model.lora.rank > 0` the run trains adapters (+ a fresh head) on the frozen model.
In a multi-process run a task may hand each process only its rows of every batch (`Setup.global_rows`,
SFT and preference do); the loop assembles the global batch from the processes' parts
(`sharding.global_batch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.config_files import write_config
from w2s_jax.train import step as step_lib
from w2s_jax.train.runtime import (
  Evaluator,
  NonFiniteError,
  Preempted,
  Runtime,
  SigTermGuard,
  Update,
  full_params,
)

__all__ = ["NonFiniteError", "Preempted", "Setup", "SigTermGuard", "train"]


@dataclasses.dataclass
class Setup:
  """What a task hands the loop: a model factory, an objective and its data."""

  make_model: Callable[[nnx.Rngs], nnx.Module]
  objective: step_lib.Objective
  train_batches: Any  # random access: train_batches[i] is batch i (dict of numpy arrays)
  eval_batches: list[dict[str, np.ndarray]]
  # Rows B of a global batch when the batches above hold only this process's rows of each
  # (`data.pipeline.process_rows`); None = they hold whole batches, the same on every process.
  global_rows: int | None = None
  # Anything worth recording; `info["metrics"]` (scalars) is added to every logged metrics record.
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Optional starting parameters (e.g. a pretrained backbone with a fresh head), an nnx.State with the
  # structure of `nnx.split(make_model(...))[1]`; None = the model's own initialisation.
  init_params: Callable[[], Any] | None = None
  # Evaluate the start model too (step 0); these eval metrics join every record as `<name>_start`.
  start_eval: tuple[str, ...] = ()


def _eval(eval_fn, params, batches: list[dict[str, np.ndarray]], mesh, rows: int | None) -> dict[str, float]:
  if not batches:
    return {}
  totals = None
  for b in batches:
    out = jax.device_get(eval_fn(params, shd.global_batch(b, mesh, rows)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  loss_sum, weight, metric_sums = totals
  w = max(float(weight), 1e-12)
  return {"eval_loss": float(loss_sum) / w, **{f"eval_{k}": float(v) / w for k, v in metric_sums.items()}}


@jax.jit
def _count_tokens(segment_ids: jax.Array) -> jax.Array:
  """Real (non-padding) tokens of a global [B, L] batch: an int32 scalar, on every process."""
  return jnp.sum(segment_ids > 0, dtype=jnp.int32)


def train(config: ml_collections.ConfigDict, workdir: str | Path, setup: Setup) -> dict[str, Any]:
  """Trains `setup` under `config`, writing everything into `workdir`.

  Args:
    config: the run's config (sections `mesh`, `sharding`, `optimizer`, and `total_steps`, `seed`,
      `grad_accum_steps`, `step_form`, `log_every_steps`, `eval_every_steps`,
      `checkpoint_every_steps`, `keep_checkpoints`, `max_nonfinite_streak`).
    workdir: output folder; an existing checkpoint there is resumed.
    setup: the task's model factory, objective and batches.

  Returns:
    A summary dict: final step, last logged metrics, last eval metrics, wall time and the final state.
  """
  total = int(config.total_steps)
  rt = Runtime(config, workdir, total_steps=total, position="next_batch", unit="step", lag=1, log_every=None,
               throughput=True, constant_metrics=setup.info.get("metrics", {}), desc="train")
  with rt:
    graphdef = rt.model(setup.make_model, params=setup.init_params)  # adapters only under model.lora
    state = rt.init_or_restore()
    if rt.lead:  # only now: a refused run (second writer, changed model) leaves the folder's config as it was
      write_config(config, workdir)
    train_step = rt.train_step(setup.objective, graphdef, form=config.step_form,
                               grad_accum_steps=config.grad_accum_steps)
    eval_key = jax.random.key(0)
    eval_fn = jax.jit(lambda p, b: setup.objective(nnx.merge(graphdef, p), b, eval_key))  # whole model

    def step_fn(state, i):
      batch = shd.global_batch(setup.train_batches[i], rt.mesh, setup.global_rows)
      tokens = _count_tokens(batch["segment_ids"]) if "segment_ids" in batch else 0  # read one step late
      state, metrics = train_step(state, batch)
      metrics = dict(metrics)
      cause = metrics.pop("nonfinite_cause")
      return state, Update(metrics, metrics["nonfinite_streak"], cause, i + 1, {"next_batch": i + 1},
                           tokens=tokens)

    every = int(config.eval_every_steps or 0)
    evaluator = None
    if every or setup.start_eval:
      evaluator = Evaluator(lambda s: _eval(eval_fn, full_params(s), setup.eval_batches, rt.mesh,
                                            setup.global_rows),
                            every=every, at_start=bool(setup.start_eval), at_end=bool(every),
                            keep_start=setup.start_eval)
    state = rt.run(state, step_fn, evaluator=evaluator)
  if setup.start_eval:  # the start model's values, as logged with every record (`<name>_start`)
    setup.info.setdefault("metrics", {}).update(rt.constant_metrics)
  return {**rt.summary, "info": setup.info, "final_step": int(jax.device_get(state.step)),
          "wall_s": rt.wall_s, "nonfinite_total": int(jax.device_get(state.nonfinite_total)), "state": state}
