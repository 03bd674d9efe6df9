"""The one training loop: data → step → log → eval → checkpoint.

Resume order: if `WORKDIR/checkpoints` holds a complete checkpoint, the run continues from the latest
one (train state, data position and all), otherwise it starts from scratch. The same command on the
same workdir therefore picks up where a killed run left off; losses after the resume point are
bit-identical to an uninterrupted run (batch i is `stream[i]`, the step key is `fold_in(rng, step)`).
SIGTERM saves a checkpoint at the next step boundary and exits with status 143.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from w2s_jax import sharding as shd
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.config_files import write_config
from w2s_jax.train import step as step_lib
from w2s_jax.train.metrics_log import MetricsWriter
from w2s_jax.train.optim import make_optimizer, make_schedule
from w2s_jax.train.state import TrainState, create_train_state

NonFiniteError = step_lib.NonFiniteError  # one error for every loop (a FloatingPointError)


class Preempted(SystemExit):
  """Raised after a SIGTERM-triggered checkpoint: exit status 143, rerun the command to resume."""

  def __init__(self):
    super().__init__(143)


@dataclasses.dataclass
class Setup:
  """What a task hands the loop: a model factory, an objective and its data."""

  make_model: Callable[[nnx.Rngs], nnx.Module]
  objective: step_lib.Objective
  train_batches: Any  # random access: train_batches[i] is batch i (dict of numpy arrays)
  eval_batches: list[dict[str, np.ndarray]]
  # Anything worth recording; `info["metrics"]` (scalars) is added to every logged metrics record.
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Optional starting parameters (e.g. a pretrained backbone with a fresh head), an nnx.State with the
  # structure of `nnx.split(make_model(...))[1]`; None = the model's own initialisation.
  init_params: Callable[[], Any] | None = None


class SigTermGuard:
  """Context manager: while open, SIGTERM only sets `received` (the loop saves and exits at a step end)."""

  def __init__(self):
    self.received = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _eval(eval_fn, params, batches: list[dict[str, np.ndarray]], mesh) -> dict[str, float]:
  if not batches:
    return {}
  totals = None
  for b in batches:
    out = jax.device_get(eval_fn(params, shd.put_batch(b, mesh)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  loss_sum, weight, metric_sums = totals
  w = max(float(weight), 1e-12)
  return {"eval_loss": float(loss_sum) / w, **{f"eval_{k}": float(v) / w for k, v in metric_sums.items()}}


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
  workdir = Path(workdir)
  lead = jax.process_index() == 0
  workdir.mkdir(parents=True, exist_ok=True)

  mesh = shd.make_mesh(dict(config.mesh))
  rules = shd.get_rules(config.sharding)
  total_steps = int(config.total_steps)
  schedule = make_schedule(
    config.optimizer.get("schedule", "constant"), peak_lr=config.optimizer.lr, total_steps=total_steps,
    warmup_steps=config.optimizer.get("warmup_steps", 0),
    end_lr_frac=config.optimizer.get("end_lr_frac", 0.0),
  )
  tx = make_optimizer(config.optimizer, total_steps)

  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    abstract_model = nnx.eval_shape(lambda: setup.make_model(nnx.Rngs(config.seed)))
    graphdef, _ = nnx.split(abstract_model)

    def init() -> TrainState:
      _, params = nnx.split(setup.make_model(nnx.Rngs(config.seed)))
      return create_train_state(params, tx, config.seed)

    abstract_state = jax.eval_shape(init)
    shardings = shd.tree_shardings(abstract_state, mesh, rules)
    abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )

    if config.step_form == "shard_map":
      if config.sharding != "dp":
        raise ValueError("step_form='shard_map' is explicit data parallelism: use sharding='dp'")
      step = step_lib.make_shard_map_train_step(
        setup.objective, tx, graphdef, mesh, grad_accum_steps=config.grad_accum_steps, schedule=schedule
      )
    elif config.step_form == "jit":
      step = step_lib.make_train_step(
        setup.objective, tx, graphdef, grad_accum_steps=config.grad_accum_steps, schedule=schedule
      )
    else:
      raise ValueError(f"unknown step_form {config.step_form!r}; choose 'jit' or 'shard_map'")
    train_step = step_lib.jit_train_step(step, shardings, mesh)
    eval_key = jax.random.key(0)
    eval_fn = jax.jit(lambda p, b: setup.objective(nnx.merge(graphdef, p), b, eval_key))

    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    try:
      latest = ckpt.latest_step()  # restore below falls back past damaged steps (with a warning)
      if latest is None and setup.init_params is not None:
        params = jax.device_put(setup.init_params(), shardings.params)
        state = jax.jit(lambda p: create_train_state(p, tx, config.seed), out_shardings=shardings)(params)
        start = 0
      elif latest is None:
        state = jax.jit(init, out_shardings=shardings)()
        start = 0
      else:
        state, data_state, _ = ckpt.restore(abstract_state)
        start = int(data_state["next_batch"])
        logging.info("resumed from %s at step %d", ckpt.directory, start)
      if lead:  # only now: a refused run (second writer, changed model) leaves the folder's config as it was
        write_config(config, workdir)

      writer = MetricsWriter(
        workdir, start_step=start, tensorboard=lead,
        filename="metrics.jsonl" if lead else f"metrics.process{jax.process_index()}.jsonl",
      )
      summary: dict[str, Any] = {"start_step": start, "info": setup.info}
      bar = tqdm(total=total_steps, initial=start, disable=not lead, desc="train", unit="step")
      t0 = time.perf_counter()
      recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=11)  # (drain time, tokens)
      # (step, tokens, device metrics, eval metrics); eval metrics join their step's record.
      pending: list[tuple[int, int, dict[str, jax.Array], dict[str, float]]] = []
      streak = [0]  # the non-finite streak at the last drained step: no checkpoint while it is open

      def drain(last: bool = False) -> None:
        # Metrics are read one step late so the host never stalls the device pipeline.
        while pending and (last or len(pending) > 1):
          s, tokens, m, ev = pending.pop(0)
          m = jax.device_get(m)
          recent.append((time.perf_counter(), tokens))
          streak[0] = int(m["nonfinite_streak"])
          cause = int(m.pop("nonfinite_cause"))
          if streak[0] >= config.max_nonfinite_streak:
            raise NonFiniteError(step_lib.nonfinite_message(streak[0], cause, s, config.optimizer.lr))
          if s % config.log_every_steps == 0 or s == total_steps or ev:
            m.update(ev)
            m.update(setup.info.get("metrics", {}))  # run-constant counts, e.g. skipped bad records
            if ev:
              summary["eval"] = ev
            if len(recent) > 2:  # throughput over the last <= 10 steps (the first has compile time)
              dt = recent[-1][0] - recent[0][0]
              m["tokens_per_s"] = sum(t for _, t in list(recent)[1:]) / max(dt, 1e-9)
            summary["last"] = writer.write(s, m)
            bar.set_postfix(loss=f"{float(m['loss']):.4f}", tok_s=f"{m.get('tokens_per_s', 0):.0f}")

      with SigTermGuard() as sigterm:
        for i in range(start, total_steps):
          host_batch = setup.train_batches[i]
          tokens = int(np.sum(host_batch["segment_ids"] > 0)) if "segment_ids" in host_batch else 0
          state, metrics = train_step(state, shd.put_batch(host_batch, mesh))
          s = i + 1
          ev = {}
          if config.eval_every_steps and (s % config.eval_every_steps == 0 or s == total_steps):
            ev = _eval(eval_fn, state.params, setup.eval_batches, mesh)
          pending.append((s, tokens, metrics, ev))
          drain()
          bar.update(1)
          if s % config.checkpoint_every_steps == 0 or s == total_steps or sigterm.received:
            drain(last=True)
            if streak[0]:
              logging.warning("step %d: no checkpoint while %d updates in a row were non-finite", s,
                              streak[0])
            else:
              ckpt.save(s, state, data_state={"next_batch": s}, config=_config_dict(config),
                        force=sigterm.received or s == total_steps)
          if sigterm.received:
            ckpt.wait()
            writer.close()
            bar.close()
            logging.warning("SIGTERM: saved step %d; rerun the same command to resume", s)
            raise Preempted()
        drain(last=True)
      ckpt.wait()
    finally:
      ckpt.close()  # also on an error or SIGTERM: waits for the save, releases the folder's writer lock
    writer.close()
    bar.close()
  summary.update(final_step=int(jax.device_get(state.step)), wall_s=time.perf_counter() - t0,
                 nonfinite_total=int(jax.device_get(state.nonfinite_total)), state=state)
  return summary
