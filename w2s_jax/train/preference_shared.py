"""Pair batches with the shared prompt split off: chosen and rejected attend to one forward of their prompt.

A pair batch (`preference_objectives`' layout) holds [2B, L] rows `[BOS] + prompt + completion`, the B
chosen rows then the B rejected rows of the same prompts. `share_prompts` rewrites it (on the host) as

- `prompt_inputs`, `prompt_positions`, `prompt_segment_ids` [B, P]: BOS + prompt, right-padded;
- `prompt_last` [B]: the prompt's last slot (its length − 1);
- `pair_inputs`, `pair_positions`, `pair_segment_ids` [B, 2, C]: the chosen / rejected completion inputs;
- `pair_targets`, `pair_loss_mask` [B, 2, 1 + C]: the targets scored at the prompt's last slot, then at
  each completion slot;

plus the batch's other keys (`ref_logps` [2B], ...) and the rows' `segment_ids` (for the loop's token
count) unchanged. `preference_objectives.batch_logps` reads it
through `models.shared_prefix` — the prompt runs once per pair — and returns the same [2B] summed
log-probs and counts as on the rows, up to rounding. P and C are fixed for a run (`pair_lengths` over its
rows), so every batch has one shape. All-zero pairs (padding) stay all zero.

Legend: B pairs, L row length, P prompt slots, C completion slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from w2s_jax import sharding as shd

ROW_KEYS = ("inputs", "targets", "loss_mask", "positions", "segment_ids")


def _prompt_and_row_lengths(rows: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(prompt slots = first loss slot + 1, real slots) of each row; 0 and 0 for an all-padding row."""
  mask = np.asarray(rows["loss_mask"]) > 0
  has = mask.any(axis=1)
  prompt = np.where(has, mask.argmax(axis=1) + 1, 0)
  real = (np.asarray(rows["segment_ids"]) > 0).sum(axis=1)
  return prompt, real


def shards_divide(mesh_shape: Mapping[str, int], pairs: int) -> bool:
  """Whether the mesh's batch axes divide `pairs` (the shared form's prompt arrays have B rows, not 2B)."""
  mesh = shd.make_mesh(dict(mesh_shape))
  return pairs % math.prod(mesh.shape.get(a, 1) for a in shd.BATCH_AXES) == 0


def pair_lengths(*row_sets: Mapping[str, np.ndarray]) -> tuple[int, int]:
  """(P, C): the longest prompt (BOS included) and the longest completion input over all rows given."""
  P = C = 1
  for rows in row_sets:
    if len(rows["inputs"]):
      prompt, real = _prompt_and_row_lengths(rows)
      P, C = max(P, int(prompt.max())), max(C, int((real - prompt).max()))
  return P, C


def share_prompts(
  batch: Mapping[str, np.ndarray], prompt_len: int, completion_len: int
) -> dict[str, np.ndarray]:
  """The shared-prompt form of a [2B, L] chosen-then-rejected pair batch (see the module docstring).

  Raises:
    ValueError: naming the pair, when its two rows' prompts differ or do not fit `prompt_len` /
      `completion_len`.
  """
  rows = {k: np.asarray(batch[k]) for k in ROW_KEYS}
  n = rows["inputs"].shape[0]
  if n % 2:
    raise ValueError(f"a pair batch needs an even number of rows (chosen first), got {n}")
  B, P, C = n // 2, prompt_len, completion_len
  prompt, real = _prompt_and_row_lengths(rows)
  out = {f"prompt_{k}": np.zeros((B, P), np.int32) for k in ("inputs", "positions", "segment_ids")}
  out["prompt_last"] = np.zeros(B, np.int32)
  out.update({f"pair_{k}": np.zeros((B, 2, C), np.int32) for k in ("inputs", "positions", "segment_ids")})
  out.update({f"pair_{k}": np.zeros((B, 2, 1 + C), np.int32) for k in ("targets", "loss_mask")})
  for b in range(B):
    c, r = b, B + b
    k = int(prompt[c])
    if int(prompt[r]) != k or not np.array_equal(rows["inputs"][c, :k], rows["inputs"][r, :k]):
      raise ValueError(f"pair {b} of the batch: its chosen and rejected rows have different prompts")
    if k > P or max(real[c], real[r]) - k > C:
      raise ValueError(f"pair {b}: prompt of {k} or completion of {max(real[c], real[r]) - k} slots does not "
                       f"fit prompt_len={P}, completion_len={C} (use pair_lengths over every row)")
    if k == 0:
      continue  # a padding pair
    for key in ("inputs", "positions", "segment_ids"):
      out[f"prompt_{key}"][b, :k] = rows[key][c, :k]
    out["prompt_last"][b] = k - 1
    for side, row in enumerate((c, r)):
      m = real[row] - k
      for key in ("inputs", "positions", "segment_ids"):
        out[f"pair_{key}"][b, side, :m] = rows[key][row, k:k + m]
      for key in ("targets", "loss_mask"):
        out[f"pair_{key}"][b, side, :1 + m] = rows[key][row, k - 1:k + m]
  out.update({k: np.asarray(v) for k, v in batch.items() if k not in ROW_KEYS})
  out["segment_ids"] = rows["segment_ids"]  # unused by the objectives; the train loop counts its tokens
  return out


def prompt_sharer(*row_sets: Mapping[str, np.ndarray]) -> Callable[[dict[str, Any]], dict[str, Any]]:
  """Pair batch -> `share_prompts` of it, with (P, C) fixed by `pair_lengths` over `row_sets`.

  Only where one process holds whole batches: a process's share of the rows would split pairs' prompts.
  """
  lengths = pair_lengths(*row_sets)
  return lambda batch: share_prompts(batch, *lengths)
