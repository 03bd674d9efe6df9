"""The one loop runtime: every training loop of the package (SFT, preference, reward model, RL,
on-policy distillation) drives it; none types out these parts itself.

A `Runtime` owns, for one run in one folder:

- the mesh and logical-axis rules (`config.mesh`, `config.sharding`), entered while it is open;
- the optimizer and its learning-rate schedule (`config.optimizer`, over the run's total updates);
- the sharded train state: abstract shapes, shardings, init-or-restore from `WORKDIR/checkpoints`;
- the checkpointer, closed (its folder's writer lock released) on ANY exit, an exception included;
- the metric writers: `metrics.jsonl` (+ TensorBoard), `eval.jsonl`, optionally `timing.jsonl`;
- SIGTERM: a checkpoint at the next step end, then `Preempted` (exit status 143);
- the non-finite guard: one `NonFiniteError` once `max_nonfinite_streak` updates in a row were skipped,
  and no checkpoint while a streak is open;
- the evaluator: at step 0, every N steps and at the end (`Evaluator`);
- LoRA (`config.model.lora`, `models/lora.py`): with a rank > 0, `model` wraps the model's projections
  with adapters; the state's `params` (and optimizer state) are the adapters (+ a fresh `head`), the base
  weights ride in `state.frozen` through the same step. Checkpoints hold the state without `frozen`
  (adapters, optimizer, counters); a resume rebuilds the base from the same start.

A loop hands `run` a function `step_fn(state, i) -> (state, Update)` that does one step (SFT: one
update) or one iteration (RL, distillation: a rollout + epochs of updates). Everything random in a
loop is keyed by (seed, step), so a resumed run's records equal the uninterrupted run's.

Usage:

  with Runtime(config, workdir, total_steps=T, total_updates=U) as rt:
    graphdef = rt.model(make_model, params=lambda: start_params)  # adapters when model.lora is set
    state = rt.init_or_restore()
    step = rt.train_step(objective, graphdef)
    state = rt.run(state, step_fn, evaluator=Evaluator(fn=...))
  rt.summary  # start_step, last, eval, eval_initial, final_step
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import optax
from absl import logging
from etils import epath
from flax import nnx
from tqdm import tqdm

from w2s_jax import sharding as shd
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.models.lora import TRAINABLE, LoRASpec
from w2s_jax.train import step as step_lib
from w2s_jax.train.metrics_log import MetricsWriter
from w2s_jax.train.optim import make_optimizer, make_schedule
from w2s_jax.train.state import TrainState, create_train_state

NonFiniteError = step_lib.NonFiniteError  # one error for every loop (a FloatingPointError)


class Preempted(SystemExit):
  """Raised after a SIGTERM-triggered checkpoint: exit status 143, rerun the command to resume."""

  def __init__(self):
    super().__init__(143)


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


@dataclasses.dataclass
class Evaluator:
  """A held-out evaluation of the train state, run by the runtime.

  Attributes:
    fn: `fn(state) -> {name: float}`.
    every: also evaluate after every `every`-th step (0: never mid-run).
    at_start: evaluate the start state (step 0) of a fresh run; a resumed run reads it back from the log.
    at_end: evaluate after the last step (or the step a loop stopped at).
    prefix: prepended to the names merged into the step's metrics record.
    log: the file (in the workdir) holding every evaluation as `{"step", names...}`.
    keep_start: names of the step-0 evaluation added to every logged record as `<name>_start`.
  """

  fn: Callable[[TrainState], dict[str, float]]
  every: int = 0
  at_start: bool = False
  at_end: bool = True
  prefix: str = ""
  log: str = "eval.jsonl"
  keep_start: tuple[str, ...] = ()

  def due(self, s: int, total: int, stop: bool) -> bool:
    return bool((self.at_end and (s == total or stop)) or (self.every and s % self.every == 0))


@dataclasses.dataclass
class Update:
  """What one step (or iteration) of a loop hands the runtime.

  Attributes:
    metrics: the record's values (device arrays are read one step late when the runtime's `lag` is 1).
    streak: non-finite updates in a row after this step (int32 scalar, device or host).
    cause: the last non-finite update's cause (`step_lib.NONFINITE_*`).
    update: the optimizer step count, named by the guard's error.
    data_state: what a checkpoint of this step stores beside the train state (data position, ...).
    tokens: tokens trained on (for `tokens_per_s` when the runtime's `throughput` is set; int or device
      scalar, read with the metrics).
    timing: when not None, written with the step's wall seconds `iter_s` to `timing.jsonl`.
    stop: the loop ends after this step (e.g. a sample budget is spent): evaluate and checkpoint now.
  """

  metrics: dict[str, Any]
  streak: Any
  cause: Any
  update: Any
  data_state: dict[str, int]
  tokens: int = 0
  timing: dict[str, Any] | None = None
  stop: bool = False


def make_tx(optimizer: ml_collections.ConfigDict, total_updates: int):
  """(schedule, optax transformation) of an `optimizer` config section over `total_updates` updates."""
  schedule = make_schedule(optimizer.get("schedule", "constant"), peak_lr=optimizer.lr,
                           total_steps=total_updates, warmup_steps=optimizer.get("warmup_steps", 0),
                           end_lr_frac=optimizer.get("end_lr_frac", 0.0))
  return schedule, make_optimizer(optimizer, total_updates)


def full_params(state: TrainState) -> Any:
  """The whole model's state: `params`, merged with `frozen` when set (a LoRA run's adapters + base)."""
  return state.params if state.frozen is None else nnx.merge_state(state.params, state.frozen)


def fit_step(objective: step_lib.Objective, graphdef: nnx.GraphDef, optimizer: Mapping[str, Any],
             total_updates: int) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
  """(optimizer, jitted `step(state, frozen, batch) -> (state, metrics)`) of an in-memory training (`fit`).

  The optimizer is `make_tx` of the `optimizer` section (schedule over `total_updates`, clipping), the
  step the one train step; `frozen` (weights shared by many trainings, e.g. a W2S rung's backbone) goes in
  as an argument, never donated, and not out.
  """
  schedule, tx = make_tx(ml_collections.ConfigDict(dict(optimizer)), total_updates)
  train_step = step_lib.make_train_step(objective, tx, graphdef, schedule=schedule)

  def step(state: TrainState, frozen: Any, batch: Any) -> tuple[TrainState, dict[str, Any]]:
    new, metrics = train_step(state.replace(frozen=frozen), batch)
    return new.replace(frozen=None), metrics

  return tx, jax.jit(step, donate_argnums=0)


def fit(step: Callable[..., Any], tx: optax.GradientTransformation, params: Any, batches: Any, *, steps: int,
        seed: int, frozen: Any = None, max_nonfinite_streak: int = 5, desc: str = "fit",
        ) -> tuple[TrainState, dict[str, Any]]:
  """A short training held in memory: no folder, no checkpoint (the W2S classifiers, whose results the
  sweep saves). `step`/`tx` come from `fit_step`; batch i is `batches[i]`.

  Returns:
    (final state, the last step's metrics).

  Raises:
    NonFiniteError: once `max_nonfinite_streak` updates in a row were skipped (read one step late).
  """
  state = create_train_state(params, tx, seed)
  metrics: dict[str, Any] = {}
  for i in tqdm(range(steps), desc=desc, unit="step", leave=False, disable=jax.process_index() != 0):
    state, new = step(state, frozen, batches[i])
    _check_streak(metrics, i, max_nonfinite_streak)  # the previous step's, read while this one runs
    metrics = new
  _check_streak(metrics, steps, max_nonfinite_streak)
  return state, metrics


def _check_streak(metrics: dict[str, Any], update: int, limit: int) -> None:
  if metrics and int(metrics["nonfinite_streak"]) >= limit:
    cause = int(metrics["nonfinite_cause"])
    raise NonFiniteError(step_lib.nonfinite_message(int(metrics["nonfinite_streak"]), cause, update, None))


class Runtime:
  """One run's mesh, optimizer, sharded state, checkpointer, writers, SIGTERM and non-finite guards.

  Args:
    config: the run's config: `mesh`, `sharding`, `optimizer`, `seed`, `checkpoint_every_steps`,
      `keep_checkpoints`, `max_nonfinite_streak` (and `log_every_steps` for `log_every=None`).
    workdir: the run's folder; a checkpoint there is resumed.
    total_steps: steps (or iterations) of the run.
    total_updates: optimizer updates of the run (the schedule's length); default `total_steps`.
    position: the `data_state` key holding the next step to run.
    unit: "step" (one update per step) or "iteration" (named in the guard's error).
    lag: 1 reads a step's metrics after the next step was dispatched (the host never stalls the
      device); 0 reads them at once.
    log_every: log every N-th step (and the last and every evaluated one); None = `log_every_steps`.
    throughput: add `tokens_per_s` (over the last <= 10 steps) to the records.
    constant_metrics: values added to every logged record (e.g. counts of skipped bad records).
    desc: the progress bar's label.
    lora: the trained model's LoRA section when it is not `config.model.lora` (e.g. a distillation's
      `student.model.lora`).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.PathLike, *, total_steps: int,
               total_updates: int | None = None, position: str = "iteration", unit: str = "iteration",
               lag: int = 0, log_every: int | None = 1, throughput: bool = False,
               constant_metrics: dict[str, Any] | None = None, desc: str = "train",
               lora: Mapping[str, Any] | None = None):
    self.config, self.workdir = config, epath.Path(workdir)
    self.total, self.position, self.unit, self.lag, self.desc = int(total_steps), position, unit, lag, desc
    self.log_every = int(config.log_every_steps if log_every is None else log_every)
    self.throughput, self.constant_metrics = throughput, dict(constant_metrics or {})
    self.lead = jax.process_index() == 0
    self.schedule, self.tx = make_tx(config.optimizer, int(total_updates or total_steps))
    self.mesh = shd.make_mesh(dict(config.mesh))
    self.rules = shd.get_rules(config.sharding)
    self.summary: dict[str, Any] = {}
    self.start, self.final = 0, 0
    self.shardings = self.abstract_state = None
    where = "model.lora" if lora is None else "the trained model's lora section"
    lora = (config.get("model") or {}).get("lora") if lora is None else lora
    self.lora = LoRASpec.from_section(lora, where)
    self._build = self._start = None
    self._stack = contextlib.ExitStack()
    self._t0 = time.perf_counter()

  @property
  def wall_s(self) -> float:
    """Seconds since the runtime was made."""
    return time.perf_counter() - self._t0

  # --- open / close --------------------------------------------------------------------------------

  def __enter__(self) -> Runtime:
    self.workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
      stack.enter_context(jax.set_mesh(self.mesh))
      stack.enter_context(nnx.logical_axis_rules(self.rules))
      self.ckpt = stack.enter_context(
        Checkpointer(self.workdir / "checkpoints", keep=self.config.keep_checkpoints))
      self.sigterm = stack.enter_context(SigTermGuard())
      self._stack = stack.pop_all()
    return self

  def __exit__(self, *exc: object) -> None:
    self._stack.close()  # writers, then the checkpointer (waits for the save, releases the lock), mesh

  def _writer(self, filename: str, tensorboard: bool = False) -> MetricsWriter:
    writer = MetricsWriter(self.workdir, start_step=self.start, filename=filename, tensorboard=tensorboard)
    self._stack.callback(writer.close)
    return writer

  # --- state ---------------------------------------------------------------------------------------

  def shard(self, init: Callable[[], TrainState]) -> Any:
    """Sets the state's shardings (and sharded abstract state) from `init`'s shapes; returns shardings."""
    abstract = jax.eval_shape(init)
    self.shardings = shd.tree_shardings(abstract, self.mesh, self.rules)
    self.abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings)
    return self.shardings

  def model(self, make_model: Callable[[nnx.Rngs], nnx.Module], *,
            params: Callable[[], Any] | None = None) -> nnx.GraphDef:
    """Declares the run's model, `make_model(nnx.Rngs(seed))` started from `params()` (its own init when
    None), adapted by `config.model.lora` when set; sets the state's shardings (`shard`).

    Returns:
      The graphdef the step merges the state's `params` (and `frozen`) into.
    """
    seed, lora = int(self.config.seed), self.lora

    def build(p: Any) -> TrainState:
      model = make_model(nnx.Rngs(seed))
      if p is not None:
        nnx.update(model, p)
      if lora is None:
        return create_train_state(nnx.split(model)[1], self.tx, seed)
      _, trainable, frozen = nnx.split(lora.apply(model, seed=seed), TRAINABLE, ...)
      return create_train_state(trainable, self.tx, seed, frozen=frozen)

    self._build, self._start = build, params
    self.shard(lambda: build(None))

    def declared() -> nnx.Module:  # the model `build` splits: with adapters when LoRA is on
      model = make_model(nnx.Rngs(seed))
      return model if lora is None else lora.apply(model, seed=seed)

    return nnx.split(nnx.eval_shape(declared))[0]

  def fresh(self, *, params: Callable[[], Any] | None = None,
            init: Callable[[], TrainState] | None = None) -> TrainState:
    """A fresh state (no checkpoint read): of the declared `model` started from `params()`, else of
    `params()` as the trainable params, else `init()`."""
    if self._build is not None and (self.lora is not None or params is None):
      start = params() if params is not None else None
      return jax.jit(self._build, out_shardings=self.shardings)(start)
    if params is not None:
      p = jax.device_put(params(), self.shardings.params)
      seed = self.config.seed
      return jax.jit(lambda p: create_train_state(p, self.tx, seed), out_shardings=self.shardings)(p)
    return jax.jit(init, out_shardings=self.shardings)()

  def init_or_restore(self, *, params: Callable[[], Any] | None = None,
                      init: Callable[[], TrainState] | None = None) -> TrainState:
    """The newest intact checkpoint's state, else a fresh state: of the declared `model` (its `params`),
    or of `params()`, or `init()` (jitted).

    Sets `start` (and `data_state`: the checkpoint's, or {} for a fresh run). Checkpoints do not hold
    `state.frozen` (a LoRA run's base): a resumed state gets it from a fresh start.
    """
    self.data_state: dict[str, Any] = {}
    params = params or self._start
    if self.ckpt.latest_step() is not None:  # restore falls back past damaged steps (with a warning)
      state, self.data_state, _ = self.ckpt.restore(self.abstract_state.replace(frozen=None))
      if self.abstract_state.frozen is not None:
        state = state.replace(frozen=self.fresh(params=params, init=init).frozen)
      self.start = int(self.data_state[self.position])
      logging.info("resumed from %s at step %d", self.ckpt.directory, self.start)
    else:
      state = self.fresh(params=params, init=init)
    self.final = self.start
    self.summary["start_step"] = self.start
    filename = "metrics.jsonl" if self.lead else f"metrics.process{jax.process_index()}.jsonl"
    self._log = self._writer(filename, tensorboard=self.lead)  # kept up to `start` (see MetricsWriter)
    return state

  def train_step(self, objective: step_lib.Objective, graphdef: nnx.GraphDef, *, form: str = "jit",
                 grad_accum_steps: int = 1) -> step_lib.Step:
    """The one train step of `objective`, jitted with the state's shardings ("jit" or "shard_map")."""
    if form == "shard_map":
      if self.config.sharding != "dp":
        raise ValueError("step_form='shard_map' is explicit data parallelism: use sharding='dp'")
      step = step_lib.make_shard_map_train_step(objective, self.tx, graphdef, self.mesh,
                                                grad_accum_steps=grad_accum_steps, schedule=self.schedule)
    elif form == "jit":
      step = step_lib.make_train_step(objective, self.tx, graphdef, grad_accum_steps=grad_accum_steps,
                                      schedule=self.schedule)
    else:
      raise ValueError(f"unknown step_form {form!r}; choose 'jit' or 'shard_map'")
    return step_lib.jit_train_step(step, self.shardings, self.mesh)

  # --- the loop ------------------------------------------------------------------------------------

  def run(self, state: TrainState, step_fn: Callable[[TrainState, int], tuple[TrainState, Update]], *,
          evaluator: Evaluator | None = None, until: Callable[[], bool] | None = None) -> TrainState:
    """Runs steps `start … total − 1` (stopping early when `until()` or an `Update.stop`); see the module
    docstring. Returns the final state; `summary` holds `last`, `eval`, `eval_initial`, `final_step`."""
    self._timing = self._eval_log = None
    if evaluator is not None:
      self._eval_log = self._writer(evaluator.log)
      self._start_eval(state, evaluator)
    self._bar = tqdm(total=self.total, initial=self.start, disable=not self.lead, desc=self.desc,
                     unit=self.unit)
    self._stack.callback(self._bar.close)
    self._pending: list[tuple[int, Update, dict[str, float]]] = []
    self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=11)
    self._streak = 0  # at the last drained step: no checkpoint while it is open
    for i in range(self.start, self.total):
      if until is not None and until():
        break
      t = time.perf_counter()
      state, out = step_fn(state, i)
      s = self.final = i + 1
      if out.timing is not None:
        self._timing = self._timing or self._writer("timing.jsonl")
        self._timing.write(s, {"iter_s": time.perf_counter() - t, **out.timing})
      ev = {}
      if evaluator is not None and evaluator.due(s, self.total, out.stop):
        ev = evaluator.fn(state)
        if ev:  # an evaluation with no held-out data gives nothing
          self.summary["eval"] = ev
          self._eval_log.write(s, ev)
        ev = {f"{evaluator.prefix}{k}": v for k, v in ev.items()}
      self._pending.append((s, out, ev))
      self._drain(last=not self.lag)
      self._bar.update(1)
      self._checkpoint(s, state, out)
      if out.stop:
        break
    self._drain(last=True)
    self.ckpt.wait()
    self.summary["final_step"] = self.final
    return state

  def _start_eval(self, state: TrainState, evaluator: Evaluator) -> None:
    if not evaluator.at_start:
      return
    if self.start == 0 and not self._eval_log.kept:
      ev = evaluator.fn(state)
      self._eval_log.write(0, ev)
    else:  # resumed: read step 0 back
      lines = self._eval_log.path.read_text().splitlines()
      if not lines or json.loads(lines[0])["step"] != 0:
        return
      ev = {k: v for k, v in json.loads(lines[0]).items() if k != "step"}
    self.summary["eval_initial"] = ev
    self.constant_metrics.update({f"{k}_start": ev[k] for k in evaluator.keep_start if k in ev})

  def _drain(self, last: bool) -> None:
    """Checks the guard and logs the pending steps (all when `last`, else all but the newest)."""
    while self._pending and (last or len(self._pending) > 1):
      s, out, ev = self._pending.pop(0)
      m, streak, cause, update, tokens = jax.device_get(
        (dict(out.metrics), out.streak, out.cause, out.update, out.tokens))
      self._recent.append((time.perf_counter(), int(tokens)))
      self._streak = int(streak)
      if self._streak >= self.config.max_nonfinite_streak:
        where = f"iteration {s}: " if self.unit == "iteration" else ""
        raise NonFiniteError(where + step_lib.nonfinite_message(self._streak, int(cause), int(update),
                                                                self.config.optimizer.lr))
      if s % self.log_every == 0 or s == self.total or out.stop or ev:
        m.update(ev)
        m.update(self.constant_metrics)
        if self.throughput and len(self._recent) > 2:  # the first step's time has the compile in it
          dt = self._recent[-1][0] - self._recent[0][0]
          m["tokens_per_s"] = sum(t for _, t in list(self._recent)[1:]) / max(dt, 1e-9)
        self.summary["last"] = self._log.write(s, m)
        self._bar.set_postfix({k: f"{float(m[k]):.4g}" for k in ("loss", "train_accuracy", "tokens_per_s")
                               if k in m})

  def _checkpoint(self, s: int, state: TrainState, out: Update) -> None:
    """Saves every `checkpoint_every_steps`, at the end, at a stop and on SIGTERM (then `Preempted`)."""
    end = s == self.total or out.stop or self.sigterm.received
    if s % self.config.checkpoint_every_steps == 0 or end:
      self._drain(last=True)
      if self._streak:
        logging.warning("%s %d: no checkpoint while %d updates in a row were non-finite", self.unit, s,
                        self._streak)
      else:
        self.ckpt.save(s, state.replace(frozen=None), data_state=out.data_state,
                       config=json.loads(self.config.to_json_best_effort()), force=end)
    if self.sigterm.received:
      self.ckpt.wait()
      logging.warning("SIGTERM: saved %s %d; rerun the same command to resume", self.unit, s)
      raise Preempted()
