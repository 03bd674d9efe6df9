"""Packing prompt/response examples into fixed-length rows with segment ids.

A row of length L holds several examples back to back. For each example the inputs are
`[BOS] + prompt + response` and the targets the same tokens shifted by one (`... + [EOS]`); the loss mask
is 1 only on targets inside the response (and its EOS). Segment ids number the examples in a row from 1
(0 = padding) and positions restart at 0 in every segment, so attention never crosses examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

FIELDS = ("inputs", "targets", "loss_mask", "positions", "segment_ids")


@dataclasses.dataclass
class PackStats:
  """Counts of a packing pass: examples seen, truncated and dropped (too long), rows and loss tokens."""

  examples: int = 0
  truncated: int = 0
  dropped: int = 0
  rows: int = 0
  tokens: int = 0


def example_arrays(
  prompt_ids: Sequence[int], response_ids: Sequence[int], *, bos_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, targets, loss_mask) of one example, each of length 1 + len(prompt) + len(response)."""
  seq = [bos_id, *prompt_ids, *response_ids, eos_id]
  inputs = np.asarray(seq[:-1], np.int32)
  targets = np.asarray(seq[1:], np.int32)
  mask = np.zeros(len(targets), np.int32)
  mask[len(prompt_ids):] = 1  # targets from the first response token through EOS
  return inputs, targets, mask


def pack(
  examples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
  seq_len: int,
  *,
  pad_id: int = 0,
  overlong: str = "truncate",
) -> tuple[dict[str, np.ndarray], PackStats]:
  """Greedily packs examples into rows of `seq_len`.

  Args:
    examples: (inputs, targets, loss_mask) triples, e.g. from `example_arrays`.
    seq_len: L, the row length.
    pad_id: token id of padding.
    overlong: what to do with an example longer than a row: "truncate" it to L tokens or "drop" it
      (both counted in the stats).

  Returns:
    (arrays, stats): arrays maps each of `FIELDS` to an int32 array [R, seq_len].
  """
  if overlong not in ("truncate", "drop"):
    raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
  rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[]]
  used = 0
  stats = PackStats()
  for inputs, targets, mask in examples:
    stats.examples += 1
    if len(inputs) > seq_len and overlong == "drop":
      stats.dropped += 1
      continue
    if len(inputs) > seq_len:
      stats.truncated += 1
      inputs, targets, mask = inputs[:seq_len], targets[:seq_len], mask[:seq_len]
    if used + len(inputs) > seq_len:
      rows.append([])
      used = 0
    rows[-1].append((inputs, targets, mask))
    used += len(inputs)
  rows = [r for r in rows if r]
  out = {f: np.zeros((len(rows), seq_len), np.int32) for f in FIELDS}
  out["inputs"][:] = pad_id
  out["targets"][:] = pad_id
  for r, row in enumerate(rows):
    start = 0
    for seg, (inputs, targets, mask) in enumerate(row, start=1):
      end = start + len(inputs)
      out["inputs"][r, start:end] = inputs
      out["targets"][r, start:end] = targets
      out["loss_mask"][r, start:end] = mask
      out["positions"][r, start:end] = np.arange(len(inputs))
      out["segment_ids"][r, start:end] = seg
      start = end
  stats.rows = len(rows)
  stats.tokens = int(out["loss_mask"].sum())
  return out, stats
