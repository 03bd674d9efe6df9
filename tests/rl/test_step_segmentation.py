"""The one step-segmentation rule (`rl.batch.step_index`) and its three shapes against a pure-Python split.

`step_ids` (VinePPO's per-token step index), `tree_rollout.step_starts` (where MC rollouts fork) and
`prm.labels.step_end_indices` (PRM label positions) must all agree with the same list of steps.
"""

import numpy as np

from w2s_jax.prm.labels import step_end_indices
from w2s_jax.rl.batch import step_ids, step_index
from w2s_jax.rl.tree_rollout import step_starts

NL, DOT = 10, 11


def _split(ids: list[int], boundary: set[int]) -> list[list[int]]:
  """Pure Python: a step is closed by a boundary token; trailing tokens form the last step."""
  steps, cur = [], []
  for t in ids:
    cur.append(t)
    if t in boundary:
      steps.append(cur)
      cur = []
  if cur:
    steps.append(cur)
  return steps


def _rows(rng: np.random.Generator, R: int, N: int) -> list[list[int]]:
  rows = [[], [NL], [NL, NL, 4], [5, 6, 7], [5, NL, 6, DOT], [5, NL, 6, NL, 7, 2]]
  while len(rows) < R:  # random rows with runs of boundaries, some ending on one
    n = int(rng.integers(0, N + 1))
    rows.append([int(t) for t in rng.choice([3, 4, 5, NL, DOT], size=n, p=[.25, .25, .2, .2, .1])])
  return rows


def test_all_shapes_follow_one_rule():
  rng = np.random.default_rng(0)
  N, C, bnd = 9, 5, (NL, DOT)
  rows = _rows(rng, 40, N)
  tokens_RN = np.full((len(rows), N), 7, np.int32)  # padding is 7, never a boundary but never a step
  tokens_RN[:, -1] = NL  # a boundary id in the padding must not count
  mask_RN = np.zeros((len(rows), N), bool)
  for r, ids in enumerate(rows):
    tokens_RN[r, :len(ids)], mask_RN[r, :len(ids)] = ids, True
  want_ids = np.full((len(rows), N), -1)
  want_starts = np.full((len(rows), C), -1)
  for r, ids in enumerate(rows):
    steps, pos = _split(ids, set(bnd)), 0
    for s, step in enumerate(steps):
      want_ids[r, pos:pos + len(step)] = s
      if s < C:
        want_starts[r, s] = pos
      pos += len(step)
    ends = step_end_indices(ids, bnd)
    assert ends.dtype == np.int32
    assert ends.tolist() == list(np.cumsum([len(st) for st in steps]) - 1), ids
  np.testing.assert_array_equal(step_index(tokens_RN, mask_RN, bnd), want_ids)
  np.testing.assert_array_equal(np.asarray(step_ids(tokens_RN, mask_RN, boundary_ids=bnd)), want_ids)
  np.testing.assert_array_equal(step_starts(tokens_RN, mask_RN, bnd, C), want_starts)
  # Hand cases of the three shapes on one row: steps [5, NL] [6, 7, NL] [8, 2].
  row = [5, NL, 6, 7, NL, 8, 2]
  assert step_index(np.asarray([row]), np.ones((1, 7), bool), (NL,)).tolist() == [[0, 0, 1, 1, 1, 2, 2]]
  assert step_end_indices(row, [NL]).tolist() == [1, 4, 6]
  assert step_starts(np.asarray([row]), np.ones((1, 7), bool), (NL,), 4).tolist() == [[0, 2, 5, -1]]
