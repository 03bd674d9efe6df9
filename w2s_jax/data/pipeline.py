"""grain pipelines from packed rows to global batches.

A training stream is a `grain.MapDataset`: packed rows, shuffled by the seed (reshuffled every epoch),
repeated forever and batched. It is random-access, so batch `i` is `stream[i]`: the data-iterator
state saved with a checkpoint is just the next batch index, and resume is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import numpy as np

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


def batch_stream(rows: dict[str, np.ndarray], batch_size: int, seed: int) -> grain.MapDataset:
  """Shuffled, repeated, batched stream over packed rows."""
  n = len(next(iter(rows.values())))
  if n < batch_size:
    raise ValueError(f"only {n} packed rows for a batch of {batch_size}: shorten the batch or add data")
  ds = grain.MapDataset.source(range(n)).shuffle(seed=seed).repeat(None)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.map(lambda idx: {k: v[np.asarray(idx)] for k, v in rows.items()})


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
  """
  train_rows, train_stats = _to_rows(train_pairs, tokenizer, seq_len, overlong)
  eval_rows, eval_stats = _to_rows(eval_pairs, tokenizer, seq_len, overlong)
  n_eval = len(eval_rows["inputs"]) // batch_size
  evals = [
    {k: v[i * batch_size:(i + 1) * batch_size] for k, v in eval_rows.items()}
    for i in range(min(n_eval, eval_batches))
  ]
  return TokenData(
    train=batch_stream(train_rows, batch_size, seed),
    eval_batches=evals,
    stats={"train": train_stats, "eval": eval_stats},
  )
