"""Choosing one answer out of N samples: verifier best-of-N, majority vote, self-certainty.

Scores are NumPy arrays (these run after sampling, on the host); the per-token statistic that needs the
model's logits (`self_certainty`) is a jittable JAX function.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def self_certainty(logits_NLV: jax.Array, mask_NL: jax.Array) -> jax.Array:
  """Self-certainty of each sample: the mean over its tokens of KL(Uniform ‖ p_t).

  SC = −1/(n·V) · Σ_t Σ_v log(V · p_t(v))   (Kang et al. 2025, "Scalable Best-of-N Selection for Large
  Language Models via Self-Certainty", arXiv 2502.18581). Higher means more confident; 0 for a uniform
  distribution.

  Args:
    logits_NLV: next-token logits at each generated position [N, L, V].
    mask_NL: 1 on generated tokens [N, L].

  Returns:
    sc_N; rows with an empty mask give 0.
  """
  logp = jax.nn.log_softmax(logits_NLV.astype(jnp.float32), axis=-1)
  v = logits_NLV.shape[-1]
  kl_NL = -jnp.mean(logp, axis=-1) - jnp.log(v)
  m = mask_NL.astype(jnp.float32)
  return jnp.sum(kl_NL * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def best_of_n(scores_N: np.ndarray, valid_N: np.ndarray | None = None) -> int:
  """Index of the highest-scoring sample (first on ties), skipping invalid ones (e.g. no answer).

  Raises:
    ValueError: when no sample is valid.
  """
  s = np.asarray(scores_N, np.float64)
  valid = np.ones(len(s), bool) if valid_N is None else np.asarray(valid_N, bool)
  if not valid.any():
    raise ValueError("best_of_n: no valid sample to choose from")
  return int(np.argmax(np.where(valid, s, -np.inf)))


def weighted_vote(answers: Sequence[Hashable | None], weights_N: np.ndarray | None = None) -> Hashable:
  """The answer with the largest total weight (plain majority with no weights); `None` answers abstain.

  Ties go to the answer seen first. Weighted by a verifier's or PRM's scores this is the "weighted
  majority vote" of Uesato et al. 2022 / Math-Shepherd.

  Raises:
    ValueError: when every answer is None.
  """
  w = np.ones(len(answers)) if weights_N is None else np.asarray(weights_N, np.float64)
  if len(w) != len(answers):
    raise ValueError(f"{len(answers)} answers but {len(w)} weights")
  totals: dict[Hashable, float] = {}
  for a, wi in zip(answers, w):
    if a is not None:
      totals[a] = totals.get(a, 0.0) + float(wi)
  if not totals:
    raise ValueError("weighted_vote: every answer is None")
  best = max(totals.values())
  return next(a for a, t in totals.items() if t == best)


def borda_vote(answers: Sequence[Hashable | None], scores_N: np.ndarray, *, power: float = 0.5) -> Hashable:
  """Self-certainty's Borda vote: the sample ranked r-th (1 = best score) gives (N − r + 1)^power points.

  Kang et al. 2025 use this with self-certainty scores; `power=0` is plain majority vote.
  """
  s = np.asarray(scores_N, np.float64)
  n = len(s)
  order = np.argsort(-s, kind="stable")
  rank = np.empty(n, np.int64)
  rank[order] = np.arange(1, n + 1)
  return weighted_vote(answers, (n - rank + 1.0) ** power)
