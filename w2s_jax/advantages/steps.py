"""The one step-segmentation rule of reasoning traces (VinePPO, Math-Shepherd, PRM labels).

A step ends with a boundary token (kept as its last token); the text after the last boundary is the last
step. `step_index` works on NumPy (host) or `jax.numpy` (traceable) arrays; `step_ids` is its jitted form.
Legend: R rows, N completion slots.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def step_index(tokens_RN: np.ndarray | jax.Array, mask_RN: np.ndarray | jax.Array,
               boundary_ids: tuple[int, ...], xp: Any = np) -> np.ndarray | jax.Array:
  """The one step-segmentation rule: step index of every completion token, −1 off the mask [R, N].

  A step ends with a boundary token (kept as its last token); the text after the last boundary is the last
  step (VinePPO, Math-Shepherd). Every other shape is derived from this: `step_ids` (jitted, on device),
  `rl.tree_rollout.step_starts` (first token of each step) and `prm.labels.step_end_indices` (last token of
  each step of one completion).

  Args:
    tokens_RN: completion token ids [R, N].
    mask_RN: completion tokens [R, N] (a prefix of each row).
    boundary_ids: the token ids that end a step.
    xp: the array module, `numpy` (host) or `jax.numpy` (traceable).

  Returns:
    int32 [R, N]: the number of boundary tokens strictly before each token, −1 off the mask.
  """
  mask_RN = xp.asarray(mask_RN).astype(bool)
  is_b_RN = xp.isin(xp.asarray(tokens_RN), xp.asarray(boundary_ids, xp.int32)) & mask_RN
  b_RN = is_b_RN.astype(xp.int32)
  return xp.where(mask_RN, xp.cumsum(b_RN, axis=-1) - b_RN, -1).astype(xp.int32)


@functools.partial(jax.jit, static_argnames=("boundary_ids",))
def step_ids(tokens_RN: jax.Array, mask_RN: jax.Array, *, boundary_ids: tuple[int, ...]) -> jax.Array:
  """`step_index` on device (jitted): step index of every completion token, −1 off the mask [R, N]."""
  return step_index(tokens_RN, mask_RN, boundary_ids, xp=jnp)
