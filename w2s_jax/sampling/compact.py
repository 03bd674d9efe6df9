"""Decoding that stops computing finished rows: the batch shrinks as rows finish.

`Sampler.decode` runs every row of its batch at every step until the last row finishes; a finished row
still costs its matmuls, attention and draw. On CPU a step costs about a + b·B (perf-4m: b·B is most of
it from B ≈ 2 on), so rows that finish early (stop tokens, tree forks that start late) waste most of the
work. `decode_compact` runs the same jitted loop, but it returns to the host each time the running rows
fit the next smaller batch size (`bucket_sizes`: B, then halves down to `min_rows`), writes the part's
rows back into the full state and gathers the running rows into that smaller batch. Each batch size
compiles its own loop once.

The tokens are those of one `Sampler.decode` call: a row's PRNG key depends on its index in the caller's
batch and the slot it draws (`row_ids`), not on which rows share its batch, and each row's computation is
the same whatever the batch size (log-probs up to float summation order). With a mesh the batch is not
compacted (plain decode), since the smaller batches must divide over the mesh's batch axes.

Legend: B rows of the caller's state, R rows of the current part.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from w2s_jax.sampling.decode_state import RUNNING, STOPPED, DecodeState

if TYPE_CHECKING:  # the sampler calls this module; only its type is needed here
  from w2s_jax.sampling.sampler import Sampler

MIN_ROWS = 2  # the smallest batch a part shrinks to (each size compiles its own decode loop)


def bucket_sizes(B: int, min_rows: int = MIN_ROWS, fine: bool = False) -> list[int]:
  """Batch sizes a part of a B-row batch may take, decreasing: B, then powers of two < B to `min_rows`.

  `fine` adds the sizes 3 * 2^k between them (..., 16, 12, 8, 6, 4, 3, 2): a part then runs at most 1.5x
  the rows still running instead of 2x, for about twice as many compiled loops.
  """
  sizes, b = [B], 1 << (max(B - 1, 1).bit_length() - 1)
  while b >= min_rows and b < B:
    sizes.append(b)
    b //= 2
  if fine:
    sizes += [3 * b // 2 for b in sizes[1:] if b >= 2 and min_rows <= 3 * b // 2 < B]
  return sorted(sizes, reverse=True)


@jax.jit
def take_rows(state: DecodeState, rows_R: jax.Array, live_R: jax.Array) -> DecodeState:
  """Rows `rows_R` of `state`; rows with `live_R` False become STOPPED (inactive padding)."""
  part = jax.tree.map(lambda x: jnp.take(x, rows_R, axis=0), state)
  return part.replace(status_B=jnp.where(live_R, part.status_B, STOPPED).astype(jnp.int32))


@functools.partial(jax.jit, donate_argnames=("home",))
def put_rows(home: DecodeState, part: DecodeState, rows_R: jax.Array) -> DecodeState:
  """`home` with row `rows_R[i]` replaced by row i of `part`; rows_R >= B are dropped (padding)."""
  return jax.tree.map(lambda h, p: h.at[rows_R].set(p.astype(h.dtype), mode="drop"), home, part)


def decode_compact(
  sampler: Sampler,
  params: Any,
  state: DecodeState,
  key: jax.Array,
  *,
  pause_ids: Sequence[int] = (),
  min_length: int = 0,
  min_rows: int = MIN_ROWS,
  fine: bool = False,
) -> DecodeState:
  """`sampler.decode(params, state, key, ...)` that drops finished rows from the batch as it goes.

  Args:
    sampler: the jitted sampler.
    params: model params.
    state: the decode state (donated, as in `Sampler.decode`).
    key: PRNG key.
    pause_ids, min_length: as in `Sampler.decode`.
    min_rows: the smallest batch a part shrinks to.
    fine: shrink through the finer `bucket_sizes(..., fine=True)` (fewer idle rows, more compiled loops).

  Returns:
    The final state of all B rows, as `sampler.decode` would return it.
  """
  kw = dict(pause_ids=pause_ids, min_length=min_length)
  B = int(state.tokens_BS.shape[0])
  if sampler.mesh is not None:
    return sampler.decode(params, state, key, **kw)
  sizes = bucket_sizes(B, min_rows, fine)
  home, part, ids_R = None, state, np.arange(B)
  while True:
    running_R = np.asarray(part.status_B) == RUNNING
    n = int(running_R.sum())
    if n == 0:
      break
    size = min(b for b in sizes if b >= n)
    if size < len(ids_R):  # write the part back, gather its running rows into a smaller batch
      home = part if home is None else put_rows(home, part, jnp.asarray(ids_R, jnp.int32))
      live = ids_R[running_R]
      ids_R = np.concatenate([live, np.full(size - n, B)])
      rows = jnp.asarray(np.where(ids_R < B, ids_R, 0), jnp.int32)
      part = take_rows(home, rows, jnp.asarray(ids_R < B))
    below = [b for b in sizes if b < size]
    part = sampler.decode(
      params, part, key, row_ids=np.where(ids_R < B, ids_R, 0), min_running=below[0] if below else 0, **kw
    )
  return part if home is None else put_rows(home, part, jnp.asarray(ids_R, jnp.int32))


__all__ = ["bucket_sizes", "decode_compact", "put_rows", "take_rows"]
