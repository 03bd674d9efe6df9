"""Performance gap recovered (PGR) and its summaries (Burns et al. 2023, §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from w2s_jax.evals.metrics import bootstrap_ci


def pgr(weak_acc: float, strong_ceiling_acc: float, transfer_acc: float) -> float:
  """PGR = (transfer − weak) / (strong ceiling − weak).

  1 means the weakly supervised strong student matched its ground-truth ceiling; 0 means it did no
  better than its supervisor. Undefined when the ceiling does not beat the weak model: returns NaN
  then, and `median_pgr` leaves such pairs out (as openai/weak-to-strong's plots do) and counts them.

  Args:
    weak_acc: accuracy of the weak model trained on ground truth.
    strong_ceiling_acc: accuracy of the strong model trained on ground truth.
    transfer_acc: accuracy of the strong model trained on the weak model's labels.
  """
  gap = strong_ceiling_acc - weak_acc
  if gap <= 0:
    return float("nan")
  return (transfer_acc - weak_acc) / gap


def median_pgr(
  weak_accs: Sequence[float], ceiling_accs: Sequence[float], transfer_accs: Sequence[float]
) -> tuple[float, int]:
  """Median PGR over (weak, strong) pairs with a positive gap, and how many pairs were left out."""
  values = [pgr(w, s, t) for w, s, t in zip(weak_accs, ceiling_accs, transfer_accs, strict=True)]
  kept = [v for v in values if not np.isnan(v)]
  return (float(np.median(kept)) if kept else float("nan")), len(values) - len(kept)


def summary_ci(values: Sequence[float]) -> dict[str, Any]:
  """Median and 95 % bootstrap CI of the finite values (as `protocol.summarize` reports them)."""
  kept = [float(v) for v in values if v is not None and np.isfinite(v)]
  if not kept:
    return {"median": None, "low": None, "high": None, "n": 0}
  med, lo, hi = bootstrap_ci(kept, np.median)
  return {"median": med, "low": lo, "high": hi, "n": len(kept)}
