"""One train step for every algorithm.

`make_train_step(objective, tx, graphdef)` returns a pure function `(state, batch) -> (state, metrics)`.
Algorithms differ only in their objective (and in how their batch is built), never in the step.

An objective is `objective(model, batch, rng) -> (loss_sum, weight, metric_sums)`: the loss of the batch is
`loss_sum / weight` and every metric is `metric_sum / weight`. Returning sums rather than means is what
makes gradient accumulation over micro-batches and the explicit data-parallel (`shard_map`) form give the
same update as one big batch: numerators and denominators are added first, divided once.

Frozen weights (a LoRA run's base model) travel in `state.frozen`: merged with the params inside the step,
never differentiated or updated, and passed to the jitted step as an argument rather than captured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from w2s_jax import sharding as shd
from w2s_jax.losses.aggregation import safe_ratio
from w2s_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Step = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


class Objective(Protocol):
  def __call__(
    self, model: nnx.Module, batch: Batch, rng: jax.Array
  ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]: ...


def _split_micro(batch: Batch, k: int) -> Batch:
  """[B, ...] -> [k, B/k, ...]; micro-batch j holds rows j, j+k, j+2k, ... (keeps device blocks intact)."""

  def split(x: jax.Array) -> jax.Array:
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows cannot be split into {k} micro-batches")
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree.map(split, batch)


def _sums_and_grads(
  objective: Objective, graphdef: nnx.GraphDef, rest: Any, params: Any, batch: Batch, rng: jax.Array,
  grad_accum_steps: int, frozen: Any = None,
) -> tuple[Any, jax.Array, jax.Array, dict[str, jax.Array]]:
  """Gradient of the loss numerator, the numerator, the weight and metric sums, over micro-batches.

  Only `params` are differentiated; `frozen` and `rest` are merged into the model as they are.
  """
  others = [s for s in (frozen, rest) if s is not None]

  def numerator(p: Any, micro: Batch, key: jax.Array):
    model = nnx.merge(graphdef, p, *others)
    loss_sum, weight, metric_sums = objective(model, micro, key)
    return loss_sum, (weight, metric_sums)

  grad_fn = jax.value_and_grad(numerator, has_aux=True)
  if grad_accum_steps == 1:
    (loss_sum, (weight, metric_sums)), grads = grad_fn(params, batch, rng)
    return grads, loss_sum, weight, metric_sums

  micro = _split_micro(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  (_, (w_shape, m_shape)), _ = jax.eval_shape(grad_fn, params, first, rng)
  zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)
  init = (
    jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32), zeros(w_shape), zeros(m_shape)
  )

  def body(carry, xs):
    g_acc, l_acc, w_acc, m_acc = carry
    i, mb = xs
    (loss_i, (w, m)), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    return (add(g_acc, g), l_acc + loss_i, w_acc + w, add(m_acc, m)), None

  (grads, loss_sum, weight, metric_sums), _ = jax.lax.scan(
    body, init, (jnp.arange(grad_accum_steps), micro)
  )
  return grads, loss_sum, weight, metric_sums


class NonFiniteError(FloatingPointError):
  """Raised by every loop after too many non-finite updates in a row; the message names the likely cause."""


# `metrics["nonfinite_cause"]` of a step: what was first found non-finite (0: nothing, the update applied).
NONFINITE_LOSS, NONFINITE_GRAD, NONFINITE_UPDATE = 1, 2, 3
# Metrics the step returns for the loop's guard rather than for the metrics file.
GUARD_METRICS = ("nonfinite_streak", "nonfinite_cause")


def _all_finite(tree: Any) -> jax.Array:
  """True when every floating-point leaf of `tree` is finite everywhere.

  Leaves of one shape are combined elementwise (`isfinite(a) & isfinite(b) & ...`) and reduced once, so
  the program has one reduction per distinct shape instead of one per leaf: the layers of a model share
  their shapes, and per-leaf reductions made XLA:CPU's compile of the train step grow with depth
  (SmolLM2-135M's params and AdamW moments, 816 leaves in 9 shapes: `experiments/benchmarks/step_compile.py`).
  In this library's models same-shaped leaves carry the same logical axes (the optimizer's moments mirror
  their params), so under a mesh the combination moves no data; were two shardings to differ, GSPMD would
  reshard one of them and the verdict would be the same.
  """
  by_shape: dict[tuple[int, ...], jax.Array] = {}
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok = jnp.isfinite(x)
      by_shape[x.shape] = ok if x.shape not in by_shape else by_shape[x.shape] & ok
  return jnp.all(jnp.stack([jnp.all(ok) for ok in by_shape.values()])) if by_shape else jnp.array(True)


def nonfinite_message(streak: int, cause: int, step: int, lr: float | None) -> str:
  """The guard's error: how many updates were skipped, and the likely cause from what was non-finite."""
  head = f"{streak} updates in a row were non-finite (last at step {step}): "
  if cause == NONFINITE_UPDATE:
    return head + (f"the loss and gradient were finite but the update or new parameters were not, so the "
                   f"learning rate is the likely cause (optimizer.lr={lr}): lower it")
  if cause == NONFINITE_GRAD:
    return head + ("the loss was finite but its gradient was not: lower optimizer.lr, set "
                   "optimizer.clip_norm, or inspect the data near that batch")
  if step <= streak:
    return head + ("the loss was non-finite from the first step: the initialisation (or the starting "
                   "checkpoint) or the first batches are the likely cause")
  return head + f"the loss itself was non-finite: inspect the data near batch {step}, or lower optimizer.lr"


def _apply(
  tx: optax.GradientTransformation, state: TrainState, grads: Any, loss_sum: jax.Array,
  weight: jax.Array, metric_sums: dict[str, jax.Array], schedule: optax.Schedule | None,
) -> tuple[TrainState, Metrics]:
  """Divides by the weight, applies the update unless anything is non-finite, and counts skips.

  Non-finite means the loss, the gradient, the update, the new parameters or the new optimizer state;
  then parameters and optimizer state stay as they were and `metrics["nonfinite_cause"]` says which.
  """
  safe_w = jnp.where(weight > 0, weight, 1.0)
  grads = jax.tree.map(lambda g: g / safe_w.astype(g.dtype), grads)
  loss = safe_ratio(loss_sum, weight)
  grad_norm = optax.tree.norm(grads)
  updates, new_opt = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  # A finite loss and gradient can still give a non-finite update (an infinite or huge learning rate,
  # a damaged optimizer moment): the new parameters and optimizer state are checked too. The update is
  # covered by the new parameters: `params + updates` is non-finite wherever `updates` is, so checking it
  # on its own changes no verdict, yet its per-leaf reductions cost compile time (XLA:CPU at the tests'
  # optimisation level 0: a quarter of the tiny preset's step compile, 8 of 21 s at 30 layers).
  loss_ok, grad_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
  update_ok = _all_finite((new_params, new_opt))
  finite = loss_ok & grad_ok & update_ok
  cause = jnp.where(~loss_ok, NONFINITE_LOSS, jnp.where(~grad_ok, NONFINITE_GRAD,
                                                        jnp.where(~update_ok, NONFINITE_UPDATE, 0)))
  # One `lax.cond` picks the new or old (params, opt_state). A `jnp.where(finite, new, old)` per leaf
  # gives the same values, but XLA:CPU's compile time then grows about quadratically with the number of
  # leaves (SmolLM2-135M, 30 layers: minutes for the step; 8 layers: about 3x the cond's compile time, a
  # ratio measured while other jobs ran — the seconds are in issue 18's session-8 note, not a result).
  params, opt_state = jax.lax.cond(finite, lambda: (new_params, new_opt),
                                   lambda: (state.params, state.opt_state))
  streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
  metrics = {
    "loss": loss,
    "grad_norm": grad_norm,
    "weight": weight,
    "nonfinite_streak": streak,
    "nonfinite_cause": cause.astype(jnp.int32),
    **{k: safe_ratio(v, weight) for k, v in metric_sums.items()},
  }
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    opt_state=opt_state,
    nonfinite_streak=streak,
    nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
  )
  return new_state, metrics


def make_train_step(
  objective: Objective,
  tx: optax.GradientTransformation,
  graphdef: nnx.GraphDef,
  *,
  rest: Any = None,
  grad_accum_steps: int = 1,
  schedule: optax.Schedule | None = None,
) -> Step:
  """Builds the pure train step (GSPMD form: shard it by jitting with shardings, see `jit_train_step`).

  Args:
    objective: `(model, batch, rng) -> (loss_sum, weight, metric_sums)`.
    tx: the optax optimizer.
    graphdef: the model's static structure, merged with `state.params` inside the step.
    rest: non-trainable model state closed over as constants (small things only), or None. Large
      frozen weights belong in `state.frozen` instead (see `create_train_state`), which the step takes
      as an argument.
    grad_accum_steps: k; the batch's leading dimension is split into k micro-batches whose numerators,
      weights and gradients are summed before one update (the same update as the full batch).
    schedule: the learning-rate schedule, only to report `lr` in the metrics.

  Returns:
    `step(state, batch) -> (state, metrics)`; the step's key is `fold_in(state.rng, state.step)`.
  """

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    sums = _sums_and_grads(
      objective, graphdef, rest, state.params, batch, rng, grad_accum_steps, state.frozen
    )
    return _apply(tx, state, *sums, schedule)

  return step


def make_shard_map_train_step(
  objective: Objective,
  tx: optax.GradientTransformation,
  graphdef: nnx.GraphDef,
  mesh: Mesh,
  *,
  rest: Any = None,
  grad_accum_steps: int = 1,
  schedule: optax.Schedule | None = None,
) -> Step:
  """The same step as explicit data parallelism: the modern form of a `pmap` step.

  Parameters and optimizer state are replicated; each device runs the objective on its slice of the
  batch (split over the `data` and `fsdp` mesh axes); gradient, loss and weight sums are combined with
  `lax.psum` and divided once — equal to the global-batch update (and to `lax.pmean` of per-device
  gradients when every device holds the same weight).
  """
  axes = shd.BATCH_AXES

  def local(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, loss_sum, weight, metric_sums = jax.lax.psum(
      _sums_and_grads(
        objective, graphdef, rest, state.params, batch, rng, grad_accum_steps, state.frozen
      ),
      axes,
    )
    return _apply(tx, state, grads, loss_sum, weight, metric_sums, schedule)

  # check_vma=False: with it on, autodiff of replicated params already inserts the cross-device sum
  # (transpose of the implicit broadcast); off, each device's gradient is local and the collective
  # above is the only one, as in a pmap step.
  return jax.shard_map(
    local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(axes)),
    out_specs=(PartitionSpec(), PartitionSpec()), check_vma=False,
  )


def jit_train_step(
  step: Step, state_shardings: Any, mesh: Mesh, *, donate: bool = True
) -> Step:
  """Jits a step once with explicit in/out shardings; the state's buffers are donated."""
  rep = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
    step,
    in_shardings=(state_shardings, shd.batch_sharding(mesh)),
    out_shardings=(state_shardings, rep),
    donate_argnums=(0,) if donate else (),
  )
