"""grain pipelines from packed rows to global batches.

A training stream is a `grain.MapDataset`: packed rows, shuffled by the seed (reshuffled every epoch),
repeated forever and batched. It is random-access, so batch `i` is `stream[i]`: the data-iterator
state saved with a checkpoint is just the next batch index, and resume is exact.

Several processes (a TPU pod slice, several GPU hosts). The global batch `i` is the same B rows whatever
the process count; with `rows=process_rows(mesh, B)` each process's stream holds only the rows of batch
`i` that its own devices hold (B / process count of them under the batch-sharded presets), gathers only
those rows, and `sharding.global_batch` assembles the processes' parts into one global `jax.Array` per
field (`jax.make_array_from_process_local_data`), equal to the one a single process would place. Tokenizing
and packing stay global (every process packs all examples, so rows are the same everywhere); only
the batches are read per process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from w2s_jax import sharding as shd
from w2s_jax.data import packing
from w2s_jax.data.tokenizers import Tokenizer


@dataclasses.dataclass
class TokenData:
  """Batches for a token objective.

  Attributes:
    train: random-access stream of global training batches (dicts of int32 [B, L] arrays).
    eval_batches: a fixed list of held-out batches.
    stats: packing statistics of the train and eval splits.
  """

  train: grain.MapDataset
  eval_batches: list[dict[str, np.ndarray]]
  stats: dict[str, packing.PackStats]


def _to_rows(
  pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, seq_len: int, overlong: str = "truncate"
) -> tuple[dict[str, np.ndarray], packing.PackStats]:
  examples = (
    packing.example_arrays(
      tokenizer.encode(p), tokenizer.encode(r), bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id
    )
    for p, r in pairs
  )
  return packing.pack(examples, seq_len, pad_id=tokenizer.pad_id, overlong=overlong)


def process_rows(mesh: Mesh, batch_size: int) -> slice:
  """The rows of a global batch of B = `batch_size` rows that this process's devices hold.

  Computed from the batch sharding (`sharding.batch_sharding`: rows over the `data` and `fsdp` axes), so
  it follows the mesh's device order; on one process it is all rows.

  Raises:
    ValueError: B does not divide over the batch axes, this process has no device in the mesh, or its
      rows are not one block.
  """
  sharding = shd.batch_sharding(mesh)
  n_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % n_shards:
    raise ValueError(f"batch_size {batch_size} does not divide over the mesh's data x fsdp = {n_shards} "
                     "devices: make it a multiple")
  blocks = sorted({s[0].indices(batch_size)[:2] for s in
                   sharding.addressable_devices_indices_map((batch_size,)).values()})
  if not blocks:
    raise ValueError(f"process {jax.process_index()} has no device in the mesh {dict(mesh.shape)}: "
                     "size the mesh to all devices (one axis -1)")
  for (_, stop), (start, _) in zip(blocks, blocks[1:]):
    if start != stop:
      raise ValueError(f"process {jax.process_index()} holds rows {blocks} of the batch, not one block: "
                       "order the mesh's devices by process")
  return slice(blocks[0][0], blocks[-1][1])


def batch_indices(n: int, batch_size: int, seed: int, rows: slice | None = None) -> grain.MapDataset:
  """Row indices of each batch: shuffled (per epoch), repeated, batched; `rows` of each batch only."""
  if n < batch_size:
    raise ValueError(f"only {n} packed rows for a batch of {batch_size}: shorten the batch or add data")
  ds = grain.MapDataset.source(range(n)).shuffle(seed=seed).repeat(None)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds if rows is None else ds.map(lambda idx: np.asarray(idx)[rows])


def batch_stream(rows: dict[str, np.ndarray], batch_size: int, seed: int,
                 process: slice | None = None) -> grain.MapDataset:
  """Shuffled, repeated, batched stream over packed rows.

  Args:
    rows: field -> [N, L] packed rows.
    batch_size: B, rows of a global batch.
    seed: shuffling seed.
    process: this process's rows of each global batch (`process_rows`); None = all B.

  Returns:
    stream[i] = batch i (of this process): field -> [B or the `process` rows, L].
  """
  n = len(next(iter(rows.values())))
  return batch_indices(n, batch_size, seed, process).map(
    lambda idx: {k: v[np.asarray(idx)] for k, v in rows.items()})


def token_data(
  train_pairs: Sequence[tuple[str, str]],
  eval_pairs: Sequence[tuple[str, str]],
  tokenizer: Tokenizer,
  *,
  seq_len: int,
  batch_size: int,
  eval_batches: int,
  seed: int,
  overlong: str = "truncate",
  process: slice | None = None,
) -> TokenData:
  """Tokenizes and packs prompt/response pairs into a training stream and fixed eval batches.

  Args:
    train_pairs, eval_pairs: (prompt, response) strings; the loss covers the response and its EOS.
    tokenizer: any `Tokenizer`.
    seq_len: L, packed row length.
    batch_size: B, rows per batch.
    eval_batches: at most this many eval batches (of B rows) are kept.
    seed: shuffling seed of the training stream.
    overlong: "truncate" or "drop" examples longer than L (counted in `stats`).
    process: this process's rows of every train and eval batch (`process_rows(mesh, B)`); None = all.
      Put its batches on the mesh with `sharding.global_batch`.
  """
  train_rows, train_stats = _to_rows(train_pairs, tokenizer, seq_len, overlong)
  eval_rows, eval_stats = _to_rows(eval_pairs, tokenizer, seq_len, overlong)
  n_eval = len(eval_rows["inputs"]) // batch_size
  lo, hi, _ = (process or slice(0, batch_size)).indices(batch_size)
  evals = [
    {k: v[i * batch_size + lo:i * batch_size + hi] for k, v in eval_rows.items()}
    for i in range(min(n_eval, eval_batches))
  ]
  return TokenData(
    train=batch_stream(train_rows, batch_size, seed, process),
    eval_batches=evals,
    stats={"train": train_stats, "eval": eval_stats},
  )
