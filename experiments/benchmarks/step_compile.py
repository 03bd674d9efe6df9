"""XLA compile time of the train step: the library's step against the same step without its non-finite guard.

  python experiments/benchmarks/step_compile.py [--presets=tiny,smollm2-135m] [--repeats=3]

The time to a run's first step is mostly compiling its train step, and on XLA:CPU that grows with the
number of parameter leaves (layers), not with their sizes. For each preset the step (AdamW with a cosine
schedule and global-norm clipping, token-mean SFT loss on a 2 x 64 batch) is traced, lowered and compiled
from abstract shapes (no weights are made, so SmolLM2-135M's shape costs no memory), in three forms:

* `library`: `train.step.make_train_step`, with the non-finite guard (one `lax.cond` keeps the old params
  and optimizer state unless the loss, the gradient norm, the new params and the new optimizer state are
  all finite);
* `per_leaf_guard`: the guard before session 11, rebuilt here from the same pieces: one reduction per leaf
  of the update, the new params and the new optimizer state (the library now reduces each distinct shape
  once, and leaves the update out: `params + update` is non-finite wherever the update is; same verdicts);
* `no_guard`: gradient, optimizer update and new params only: the floor.

Each repeat compiles every form afresh (new function objects; no compilation cache), the forms interleaved.
Prints one JSON line: per preset and form, compile seconds (median, min, max) and trace + lower seconds,
the parameter leaves, and the load average before and after (`loaded` when it exceeded the cores:
XLA:CPU compiles in parallel threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from _bench import cores, load_record
from flax import nnx

from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import step as step_lib
from w2s_jax.train.objectives import sft_objective
from w2s_jax.train.optim import make_optimizer
from w2s_jax.train.state import create_train_state

OPTIMIZER = {"name": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup_steps": 5, "end_lr_frac": 0.1,
             "weight_decay": 0.01, "clip_norm": 1.0}


def _steps(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> dict:
  """The three step forms of the module docstring, as fresh functions."""
  objective = sft_objective(reduction="token-mean")

  def grads_and_update(state, batch):
    def loss(p):
      loss_sum, weight, _ = objective(nnx.merge(graphdef, p), batch, jax.random.key(0))
      return loss_sum / weight, loss_sum
    grads, loss_sum = jax.grad(loss, has_aux=True)(state.params)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    return loss_sum, grads, updates, optax.apply_updates(state.params, updates), new_opt

  def no_guard(state, batch):
    _, _, _, params, opt_state = grads_and_update(state, batch)
    return state.replace(params=params, opt_state=opt_state)

  def per_leaf_guard(state, batch):
    loss_sum, grads, updates, params, opt_state = grads_and_update(state, batch)
    ok = jnp.isfinite(loss_sum) & jnp.isfinite(optax.tree.norm(grads))
    leaves = jax.tree.leaves((updates, params, opt_state))
    leaves = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    params, opt_state = jax.lax.cond(ok, lambda: (params, opt_state), lambda: (state.params, state.opt_state))
    return state.replace(params=params, opt_state=opt_state)

  library = step_lib.make_train_step(objective, tx, graphdef)
  return {"library": library, "per_leaf_guard": per_leaf_guard, "no_guard": no_guard}


def _time_compile(step, state, batch) -> tuple[float, float]:
  t0 = time.perf_counter()
  lowered = jax.jit(step).lower(state, batch)
  t1 = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - t1, t1 - t0


def abstract_step_inputs(cfg, tx: optax.GradientTransformation, batch_size: int, seq_len: int):
  """(graphdef, params, state, batch) of model config `cfg` as shapes only: nothing is allocated."""
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  state = jax.eval_shape(lambda p: create_train_state(p, tx, 0), params)
  tokens = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32)
  batch = {"inputs": tokens, "targets": tokens, "positions": tokens, "segment_ids": tokens,
           "loss_mask": jax.ShapeDtypeStruct((batch_size, seq_len), jnp.float32)}
  return graphdef, params, state, batch


def bench_preset(name: str, repeats: int, batch_size: int, seq_len: int) -> dict:
  cfg = get_preset(name)
  tx = make_optimizer(OPTIMIZER, total_steps=100)
  graphdef, params, state, batch = abstract_step_inputs(cfg, tx, batch_size, seq_len)
  compile_s: dict[str, list[float]] = {}
  trace_s: dict[str, list[float]] = {}
  for _ in range(repeats):
    for form, step in _steps(graphdef, tx).items():
      c, t = _time_compile(step, state, batch)
      compile_s.setdefault(form, []).append(c)
      trace_s.setdefault(form, []).append(t)
  row = {"layers": cfg.n_layers, "param_leaves": len(jax.tree.leaves(params))}
  for form, ts in compile_s.items():
    row[form] = {"compile_median_s": round(statistics.median(ts), 2), "compile_min_s": round(min(ts), 2),
                 "compile_max_s": round(max(ts), 2),
                 "trace_lower_median_s": round(statistics.median(trace_s[form]), 2)}
  return row


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--presets", default="tiny,smollm2-135m")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=2)
  parser.add_argument("--seq-len", type=int, default=64)
  args = parser.parse_args()
  load_before = os.getloadavg()[0]
  out = {"backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "repeats": args.repeats}
  for name in args.presets.split(","):
    out[name] = bench_preset(name, args.repeats, args.batch_size, args.seq_len)
  out.update(load_record(load_before, cores()))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
