"""Weak-label filtering and relabelling with the strong model's own features (EleutherAI/w2s).

Before the strong student is trained on weak labels, a cheap predictor on the student's features of the
weak-labelled set is fit *to the weak labels themselves*: a k-nearest-neighbour vote (`w2s/probe.py::
KnnProbe`), an L2-regularised logistic probe (`LogisticProbe`, `w2s/logistic.py::Classifier`), or the
TopoFilter graph filter (`w2s/topo.py`). Where its prediction q_n disagrees with the weak label y_n,
the label is likely a weak-model error that the strong representation does not support, so the
example is dropped (`probe_filter`, `contamination`) or its label replaced by q_n (`probe_relabel`).

Disagreement is d_n = ½ Σ_c |q_nc − y_nc| ∈ [0, 1] (the total-variation distance; for two classes the
reference's |q_n1 − y_n1|); agreement is 1 − d_n. Dropping removes the ⌊drop_frac·N⌋ examples of
largest d_n (ties: the lower index goes first), as the reference's `argsort(descending)[int(c·N):]`.

Differences from the reference, chosen so the predictor cannot just echo the label it is judged
against: the reference fits and predicts on the same set, so each kNN vote includes the example's own
label and the probe is scored in-sample. Here kNN leaves the example out (`include_self=False`) and the
probe is cross-fitted over `folds` seeded folds (each fold predicted by a probe fit on the others);
`include_self=True` and `folds=1` give the reference. The probe standardises features by default
(`standardize`), which makes `l2_penalty` scale-free on LM hidden states.

Shapes: features_NF [N, F] (any float dtype), soft_NC [N, C] rows summing to 1, keep_N bool [N].
All functions are NumPy (and SciPy, a JAX dependency): they run once per weak-labelled set, off-device.

Every entry of `LABEL_FILTERS` has the signature
`(features_NF, soft_NC, *, seed=0, **kwargs) -> (soft_NC, keep_N)`: a drop returns the labels unchanged
and a keep mask; a relabel returns new labels and an all-True mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import optimize
from scipy.sparse import csgraph, csr_matrix

METRICS = ("euclidean", "cosine")
METHODS = ("knn", "probe")

LabelFilter = Callable[..., tuple[np.ndarray, np.ndarray]]


def _check(features_NF: Any, soft_NC: Any) -> tuple[np.ndarray, np.ndarray]:
  x_NF = np.asarray(features_NF, np.float64)
  y_NC = np.asarray(soft_NC, np.float64)
  if x_NF.ndim != 2 or y_NC.ndim != 2 or len(x_NF) != len(y_NC):
    raise ValueError(f"need features [N, F] and soft labels [N, C] of the same N; got {x_NF.shape} and "
                     f"{y_NC.shape}")
  if len(y_NC) < 2:
    raise ValueError(f"need at least 2 examples to filter; got {len(y_NC)}")
  bad = np.flatnonzero(np.abs(y_NC.sum(-1) - 1.0) > 1e-3)
  if bad.size:
    raise ValueError(f"soft labels must be probabilities summing to 1 per row; row {bad[0]} sums to "
                     f"{y_NC[bad[0]].sum():.4f} (pass soft labels [N, C], not P(class 1) [N])")
  if not np.all(np.isfinite(x_NF)):
    raise ValueError("features contain NaN or inf")
  return x_NF, y_NC


def disagreement(pred_NC: Any, soft_NC: Any) -> np.ndarray:
  """d_n = ½ Σ_c |q_nc − y_nc| ∈ [0, 1]: the total-variation distance between a predictor's q_n and the
  weak label y_n (|q_n1 − y_n1| for two classes, the reference's `(preds - labels).abs()`).

  Args:
    pred_NC: predictor's class probabilities [N, C].
    soft_NC: weak soft labels [N, C].

  Returns:
    disagreement_N, float64.
  """
  return 0.5 * np.abs(np.asarray(pred_NC, np.float64) - np.asarray(soft_NC, np.float64)).sum(-1)


# ------------------------------------------------------------------------------------------------
# kNN vote (EleutherAI/w2s `KnnProbe`).
# ------------------------------------------------------------------------------------------------


def knn_indices(features_NF: Any, *, k: int, metric: str = "euclidean", include_self: bool = False,
                chunk: int = 1024) -> np.ndarray:
  """Indices [N, k'] of each example's k nearest neighbours, nearest first, ties to the lower index.

  Euclidean distance (the reference's `torch.cdist`) or cosine distance 1 − x̂_n·x̂_m.
  `include_self=True` counts the example itself as its nearest neighbour (the reference, which predicts
  on the set it was fit on); otherwise it is left out. k' = min(k, number of candidates).

  Args:
    features_NF: features [N, F].
    k: neighbours per example (≥ 1).
    metric: "euclidean" or "cosine".
    include_self: whether an example is its own neighbour.
    chunk: rows of the distance matrix computed at once (memory ≈ chunk·N·8 bytes).
  """
  if metric not in METRICS:
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
  if k < 1:
    raise ValueError(f"k must be ≥ 1; got {k}")
  x_NF = np.asarray(features_NF, np.float64)
  n = len(x_NF)
  if metric == "cosine":
    norm_N = np.linalg.norm(x_NF, axis=-1, keepdims=True)
    x_NF = x_NF / np.where(norm_N > 0, norm_N, 1.0)
  k = min(k, n if include_self else n - 1)
  sq_N = np.sum(x_NF * x_NF, axis=-1)
  out = []
  for start in range(0, n, chunk):
    rows = np.arange(start, min(start + chunk, n))
    gram_RN = x_NF[rows] @ x_NF.T
    if metric == "cosine":
      dist_RN = 1.0 - gram_RN
    else:
      dist_RN = np.sqrt(np.maximum(sq_N[rows, None] + sq_N[None, :] - 2.0 * gram_RN, 0.0))
    dist_RN[np.arange(len(rows)), rows] = -np.inf if include_self else np.inf
    out.append(np.argsort(dist_RN, axis=-1, kind="stable")[:, :k])
  return np.concatenate(out)


def knn_predictions(features_NF: Any, soft_NC: Any, *, k: int = 50, metric: str = "euclidean",
                    include_self: bool = False) -> np.ndarray:
  """q_n = (1/k) Σ_{m ∈ kNN(n)} y_m: the mean weak label of each example's k nearest neighbours in
  feature space (EleutherAI/w2s `KnnProbe.predict`, k = 50 there).

  Args:
    features_NF: strong-model features of the weak-labelled set [N, F].
    soft_NC: weak soft labels [N, C].
    k: neighbours (capped at the number of candidates: with k ≥ N every q_n is the mean of all labels
      but y_n, or of all labels with `include_self`).
    metric: "euclidean" (the reference) or "cosine".
    include_self: count the example's own label in its vote (True = the reference).

  Returns:
    pred_NC, float64, rows summing to 1.
  """
  x_NF, y_NC = _check(features_NF, soft_NC)
  idx_NK = knn_indices(x_NF, k=k, metric=metric, include_self=include_self)
  return y_NC[idx_NK].mean(axis=1)


def knn_agreement(features_NF: Any, soft_NC: Any, k: int = 50, **kwargs: Any) -> np.ndarray:
  """1 − ½ Σ_c |q_nc − y_nc| with q = `knn_predictions(features_NF, soft_NC, k=k, **kwargs)`.

  Returns:
    agreement_N ∈ [0, 1] (1: the neighbours' mean label equals the weak label).
  """
  return 1.0 - disagreement(knn_predictions(features_NF, soft_NC, k=k, **kwargs), soft_NC)


# ------------------------------------------------------------------------------------------------
# Logistic probe (EleutherAI/w2s `LogisticProbe` / `Classifier.fit`).
# ------------------------------------------------------------------------------------------------


def _logits(x_NF: np.ndarray, w_FK: np.ndarray, b_K: np.ndarray) -> np.ndarray:
  """Baseline-category logits [N, C] = [0, x·W + b]: for C = 2 softmax of these is σ(x·w + b)."""
  z_NK = x_NF @ w_FK + b_K
  return np.concatenate([np.zeros((len(x_NF), 1)), z_NK], axis=-1)


def _log_softmax(z_NC: np.ndarray) -> np.ndarray:
  z_NC = z_NC - z_NC.max(-1, keepdims=True)
  return z_NC - np.log(np.exp(z_NC).sum(-1, keepdims=True))


def fit_logistic_probe(features_NF: Any, soft_NC: Any, *, l2_penalty: float = 1e-3,
                       max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """Soft-label logistic regression: min_{W,b} mean_n CE(y_n, softmax([0, x_n·W + b])) + λ‖W‖².

  For two classes this is the reference's `Classifier(num_classes=1).fit`: mean BCE-with-logits of the
  soft label y_n1 against x_n·w + b, plus `l2_penalty`·‖w‖² (bias not penalised), zero init, L-BFGS
  (SciPy's here, PyTorch's there). More classes use class 0 as the baseline category.

  Args:
    features_NF: features [N, F] (no standardisation here).
    soft_NC: soft targets [N, C].
    l2_penalty: λ (the reference's `l2p`, 1e-3).
    max_iter: L-BFGS iterations.

  Returns:
    (w_FK, b_K) with K = C − 1: logits_NC = [0, features @ w + b].
  """
  x_NF = np.asarray(features_NF, np.float64)
  y_NC = np.asarray(soft_NC, np.float64)
  (n, f), kk = x_NF.shape, y_NC.shape[1] - 1

  def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
    w_FK, b_K = theta[:f * kk].reshape(f, kk), theta[f * kk:]
    logp_NC = _log_softmax(_logits(x_NF, w_FK, b_K))
    value = -np.sum(y_NC * logp_NC) / n + l2_penalty * np.sum(w_FK * w_FK)
    r_NK = (np.exp(logp_NC) - y_NC)[:, 1:] / n
    grad_w = x_NF.T @ r_NK + 2.0 * l2_penalty * w_FK
    return float(value), np.concatenate([grad_w.ravel(), r_NK.sum(0)])

  res = optimize.minimize(value_and_grad, np.zeros(f * kk + kk), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14})
  return res.x[:f * kk].reshape(f, kk), res.x[f * kk:]


def probe_predictions(features_NF: Any, soft_NC: Any, *, seed: int = 0, folds: int = 5,
                      l2_penalty: float = 1e-3, standardize: bool = True, max_iter: int = 1000
                      ) -> np.ndarray:
  """q_n = softmax([0, x_n·W + b]) of a logistic probe fit on the weak labels of the *other* folds.

  The N examples are split into `folds` near-equal folds by a permutation seeded with `seed`; each fold
  is predicted by `fit_logistic_probe` on the rest, so no q_n has seen y_n. `folds=1` fits and predicts
  on all N (the reference's in-sample `LogisticProbe`). With `standardize`, features are shifted and
  scaled by the training part's mean and standard deviation (constant features left unscaled).

  Args:
    features_NF: strong-model features of the weak-labelled set [N, F].
    soft_NC: weak soft labels [N, C].
    seed: seed of the fold assignment.
    folds: number of cross-fitting folds (1 = in-sample; at most N).
    l2_penalty: λ of `fit_logistic_probe`.
    standardize: standardise features per fold.
    max_iter: L-BFGS iterations per fit.

  Returns:
    pred_NC, float64, rows summing to 1.
  """
  x_NF, y_NC = _check(features_NF, soft_NC)
  n = len(x_NF)
  if not 1 <= folds <= n:
    raise ValueError(f"folds must be in [1, N={n}]; got {folds}")
  fold_N = np.empty(n, np.int64)
  fold_N[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
  pred_NC = np.empty_like(y_NC)
  for i in range(folds):
    test = fold_N == i
    train = ~test if folds > 1 else test
    mu_F, sd_F = np.zeros(x_NF.shape[1]), np.ones(x_NF.shape[1])
    if standardize:
      mu_F, sd_F = x_NF[train].mean(0), x_NF[train].std(0)
      sd_F = np.where(sd_F > 0, sd_F, 1.0)
    w, b = fit_logistic_probe((x_NF[train] - mu_F) / sd_F, y_NC[train], l2_penalty=l2_penalty,
                              max_iter=max_iter)
    pred_NC[test] = np.exp(_log_softmax(_logits((x_NF[test] - mu_F) / sd_F, w, b)))
  return pred_NC


def probe_agreement(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any) -> np.ndarray:
  """1 − ½ Σ_c |q_nc − y_nc| with q = `probe_predictions(features_NF, soft_NC, seed=seed, **kwargs)`.

  Returns:
    agreement_N ∈ [0, 1].
  """
  return 1.0 - disagreement(probe_predictions(features_NF, soft_NC, seed=seed, **kwargs), soft_NC)


# ------------------------------------------------------------------------------------------------
# Drop or relabel.
# ------------------------------------------------------------------------------------------------


def _predictions(method: str, features_NF: Any, soft_NC: Any, seed: int, kwargs: dict[str, Any]
                 ) -> np.ndarray:
  if method == "knn":
    return knn_predictions(features_NF, soft_NC, **kwargs)
  if method == "probe":
    return probe_predictions(features_NF, soft_NC, seed=seed, **kwargs)
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _share(frac: float, n: int, name: str) -> int:
  """⌊frac·n⌋, robust to float error (0.29·100 is 28.999…)."""
  if not 0.0 <= frac <= 1.0:
    raise ValueError(f"{name} must be in [0, 1]; got {frac}")
  return int(np.floor(frac * n + 1e-9))


def _most_disagreeing(disagree_N: np.ndarray, count: int) -> np.ndarray:
  """Indices of the `count` largest disagreements (ties: lower index first)."""
  return np.argsort(-disagree_N, kind="stable")[:count]


def filter_weak_labels(features_NF: Any, soft_NC: Any, *, method: str, drop_frac: float = 0.1,
                       seed: int = 0, **kwargs: Any) -> np.ndarray:
  """keep_N: False on the ⌊drop_frac·N⌋ examples whose weak label the predictor disagrees with most.

  EleutherAI/w2s `Probe.filter(acts, labels, contamination)` (`probe_filter=True`, contamination 0.1).

  Args:
    features_NF: strong-model features of the weak-labelled set [N, F].
    soft_NC: weak soft labels [N, C].
    method: "knn" (`knn_predictions`) or "probe" (`probe_predictions`).
    drop_frac: share of the set to drop (the reference's `contamination`).
    seed: seed of the probe's folds (unused by kNN).
    **kwargs: the predictor's keywords (`k`, `metric`, `include_self`; `folds`, `l2_penalty`, ...).

  Returns:
    keep_N, bool.
  """
  pred_NC = _predictions(method, features_NF, soft_NC, seed, kwargs)
  keep_N = np.ones(len(pred_NC), bool)
  count = _share(drop_frac, len(pred_NC), "drop_frac")
  keep_N[_most_disagreeing(disagreement(pred_NC, soft_NC), count)] = False
  return keep_N


def relabel_weak_labels(features_NF: Any, soft_NC: Any, *, method: str, relabel_frac: float = 1.0,
                        seed: int = 0, **kwargs: Any) -> np.ndarray:
  """New soft labels: the predictor's q_n on the ⌊relabel_frac·N⌋ most-disagreeing examples, y_n on
  the rest. `relabel_frac=1` replaces every label (EleutherAI/w2s `probe_relabel=True`: labels ← q).

  Args:
    features_NF: strong-model features of the weak-labelled set [N, F].
    soft_NC: weak soft labels [N, C].
    method: "knn" or "probe".
    relabel_frac: share of the set to relabel, most-disagreeing first.
    seed: seed of the probe's folds (unused by kNN).
    **kwargs: the predictor's keywords.

  Returns:
    soft_NC, float32.
  """
  pred_NC = _predictions(method, features_NF, soft_NC, seed, kwargs)
  out_NC = np.array(soft_NC, np.float32)
  count = _share(relabel_frac, len(pred_NC), "relabel_frac")
  rows = _most_disagreeing(disagreement(pred_NC, soft_NC), count)
  out_NC[rows] = pred_NC[rows]
  return out_NC


# ------------------------------------------------------------------------------------------------
# TopoFilter (EleutherAI/w2s `w2s/topo.py::topofilter`).
# ------------------------------------------------------------------------------------------------


def topo_filter(features_NF: Any, soft_NC: Any, *, drop_frac: float = 0.1, k_cc: int = 50,
                k_zeta: int = 50, metric: str = "euclidean") -> np.ndarray:
  """TopoFilter keep mask: per-class largest connected component, then a kNN disagreement filter.

  1. Directed kNN graph on all N examples (k_cc neighbours, self excluded), edge n → m for m ∈ kNN(n).
     For each hard class c = argmax_c y_nc (for two classes: y_n1 > 0.5), keep the largest strongly
     connected component of the subgraph on that class's examples; the rest are dropped.
  2. On the kept set S: d_n = ½ Σ_c |mean_{m ∈ kNN_S(n)} y_m − y_n| over k_zeta neighbours within S,
     and the round(drop_frac·N) − (N − |S|) examples of largest d_n are dropped too (none if step 1
     already dropped that many).

  The reference builds the graph from the positive class's rows of the full kNN adjacency, which gives
  the same components as the induced subgraph (a node of the other class has no outgoing edge there).

  Args:
    features_NF: strong-model features [N, F].
    soft_NC: weak soft labels [N, C].
    drop_frac: target share to drop (the reference's `contamination`).
    k_cc: neighbours of the component graph (50 as the reference's `TopoProbeConfig`; its function
      default is 5).
    k_zeta: neighbours of the disagreement step (50 likewise).
    metric: "euclidean" (the reference) or "cosine".

  Returns:
    keep_N, bool.
  """
  x_NF, y_NC = _check(features_NF, soft_NC)
  n = len(x_NF)
  _share(drop_frac, n, "drop_frac")
  idx_NK = knn_indices(x_NF, k=k_cc, metric=metric)
  cls_N = np.argmax(y_NC, axis=-1)
  keep_N = np.zeros(n, bool)
  for c in np.unique(cls_N):
    members = np.flatnonzero(cls_N == c)
    local = np.full(n, -1)
    local[members] = np.arange(len(members))
    src, dst = np.repeat(members, idx_NK.shape[1]), idx_NK[members].ravel()
    same = local[dst] >= 0
    adj = csr_matrix((np.ones(same.sum()), (local[src[same]], local[dst[same]])),
                     shape=(len(members), len(members)))
    _, comp = csgraph.connected_components(adj, directed=True, connection="strong")
    keep_N[members[comp == np.bincount(comp).argmax()]] = True
  kept = np.flatnonzero(keep_N)
  extra = max(round(n * drop_frac) - (n - len(kept)), 0)  # Python's round, as the reference
  if extra and len(kept) > 1:
    pred_SC = knn_predictions(x_NF[kept], y_NC[kept], k=k_zeta, metric=metric)
    keep_N[kept[_most_disagreeing(disagreement(pred_SC, y_NC[kept]), extra)]] = False
  return keep_N


# ------------------------------------------------------------------------------------------------
# Registry: `train.label_filter` names.
# ------------------------------------------------------------------------------------------------


def no_filter(features_NF: Any, soft_NC: Any, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The weak labels as they are: (soft_NC, all True)."""
  del features_NF, seed
  soft_NC = np.asarray(soft_NC, np.float32)
  return soft_NC, np.ones(len(soft_NC), bool)


def knn_drop(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
             ) -> tuple[np.ndarray, np.ndarray]:
  """`filter_weak_labels(method="knn")`; kwargs `drop_frac`, `k`, `metric`, `include_self`."""
  keep_N = filter_weak_labels(features_NF, soft_NC, method="knn", seed=seed, **kwargs)
  return np.asarray(soft_NC, np.float32), keep_N


def knn_relabel(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
                ) -> tuple[np.ndarray, np.ndarray]:
  """`relabel_weak_labels(method="knn")`; kwargs `relabel_frac`, `k`, `metric`, `include_self`."""
  new_NC = relabel_weak_labels(features_NF, soft_NC, method="knn", seed=seed, **kwargs)
  return new_NC, np.ones(len(new_NC), bool)


def probe_drop(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
               ) -> tuple[np.ndarray, np.ndarray]:
  """`filter_weak_labels(method="probe")`; kwargs `drop_frac`, `folds`, `l2_penalty`, `standardize`,
  `max_iter`."""
  keep_N = filter_weak_labels(features_NF, soft_NC, method="probe", seed=seed, **kwargs)
  return np.asarray(soft_NC, np.float32), keep_N


def probe_relabel(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
                  ) -> tuple[np.ndarray, np.ndarray]:
  """`relabel_weak_labels(method="probe")`; kwargs `relabel_frac`, `folds`, `l2_penalty`,
  `standardize`, `max_iter`."""
  new_NC = relabel_weak_labels(features_NF, soft_NC, method="probe", seed=seed, **kwargs)
  return new_NC, np.ones(len(new_NC), bool)


def topo_drop(features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
              ) -> tuple[np.ndarray, np.ndarray]:
  """`topo_filter`; kwargs `drop_frac`, `k_cc`, `k_zeta`, `metric`."""
  del seed
  return np.asarray(soft_NC, np.float32), topo_filter(features_NF, soft_NC, **kwargs)


LABEL_FILTERS: dict[str, LabelFilter] = {
  "none": no_filter, "knn_drop": knn_drop, "knn_relabel": knn_relabel, "probe_drop": probe_drop,
  "probe_relabel": probe_relabel, "topo_drop": topo_drop,
}


def apply_label_filter(name: str, features_NF: Any, soft_NC: Any, *, seed: int = 0, **kwargs: Any
                       ) -> tuple[np.ndarray, np.ndarray]:
  """`LABEL_FILTERS[name](features_NF, soft_NC, seed=seed, **kwargs)` with a clear error for a bad name
  (the config's `train.label_filter` and `train.label_filter_kwargs`)."""
  if name not in LABEL_FILTERS:
    raise ValueError(f"unknown train.label_filter {name!r}; choose one of {sorted(LABEL_FILTERS)}")
  return LABEL_FILTERS[name](features_NF, soft_NC, seed=seed, **kwargs)
