"""The train state: one pytree holding everything a step reads and writes.

The model's structure (`nnx.GraphDef`) is static and lives outside the state; the step merges it with
`params` (and `frozen`, when set) inside the jitted function, so the step is a pure function of pytrees.

`frozen` holds model state that the step reads but never updates (a LoRA run's base weights): it is a
jit argument like the params — placed by its own shardings, never baked into the compiled program as a
constant — yet it has no gradient and no optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
  """Pytree of a training run's mutable values.

  Attributes:
    step: int32 scalar, number of updates applied (skipped non-finite updates count too).
    params: the trainable parameters, an `nnx.State` of the model's `nnx.Param`s.
    opt_state: optax state of `params`.
    rng: a raw PRNG key (uint32[2]); a step's key is `fold_in(rng, step)`.
    nonfinite_streak: int32 scalar, updates skipped in a row because loss or gradients were not finite.
    nonfinite_total: int32 scalar, all updates skipped so far.
    frozen: model state merged with `params` in the step but not trained (e.g. the base weights under
      LoRA), or None.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_streak: jax.Array
  nonfinite_total: jax.Array
  frozen: Any = None


def create_train_state(
  params: Any, tx: optax.GradientTransformation, seed: int, *, frozen: Any = None
) -> TrainState:
  """Builds the initial state of `params` under optimizer `tx` (call under jit to place by sharding).

  `frozen` (optional) is carried as is: merged into the model by the step, never updated.
  """
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    rng=jax.random.key_data(jax.random.key(seed)),
    nonfinite_streak=jnp.zeros((), jnp.int32),
    nonfinite_total=jnp.zeros((), jnp.int32),
    frozen=frozen,
  )


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """Splits a model into (graphdef, trainable params, everything else)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, params, rest
