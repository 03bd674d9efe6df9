"""Weak-label filtering and relabelling (EleutherAI/w2s `probe.py`, `topo.py`): worked examples, brute-force
and Newton references, and properties."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from w2s_jax.w2s import label_filters as lf

# Six points on a line, hard weak labels as one-hot rows (class 1 = [0, 1]).
X_LINE = np.array([0.0, 1.0, 3.0, 10.0, 11.0, 12.0])[:, None]
Y_LINE = np.eye(2)[[1, 1, 0, 0, 0, 1]]


def _two_clusters(n=60, f=4, flip=0.0, seed=0):
  """Two Gaussian clusters 6σ apart; weak labels = cluster, with a share `flip` flipped."""
  rng = np.random.default_rng(seed)
  truth = np.arange(n) % 2
  x = rng.normal(size=(n, f)) + 3.0 * (2 * truth[:, None] - 1)
  flipped = np.zeros(n, bool)
  flipped[rng.choice(n, int(flip * n), replace=False)] = True
  return x, np.eye(2)[np.where(flipped, 1 - truth, truth)], flipped


def test_disagreement_is_total_variation():
  # ½(|.7 − .2| + |.3 − .8|) = .5;  ½(|.5 − .2| + |.3 − .3| + |.2 − .5|) = .3.
  np.testing.assert_allclose(lf.disagreement([[0.7, 0.3]], [[0.2, 0.8]]), [0.5])
  np.testing.assert_allclose(lf.disagreement([[0.5, 0.3, 0.2]], [[0.2, 0.3, 0.5]]), [0.3])


def test_knn_worked_example_leave_one_out():
  # k = 2, self excluded; neighbours by |x_n − x_m| (ties to the lower index), q₁ = mean class-1 label:
  #   x=0:  1 (d 1), 3 (d 3)   → labels 1, 0 → .5      x=10: 11 (1), 12 (2)          → 0, 1 → .5
  #   x=1:  0 (1), 3 (2)       → 1, 0 → .5             x=11: 10 (1), 12 (1) (tie)    → 0, 1 → .5
  #   x=3:  1 (2), 0 (3)       → 1, 1 → 1  (label 0)   x=12: 11 (1), 10 (2)          → 0, 0 → 0 (label 1)
  q = lf.knn_predictions(X_LINE, Y_LINE, k=2)
  np.testing.assert_allclose(q[:, 1], [0.5, 0.5, 1.0, 0.5, 0.5, 0.0])
  # |q₁ − y₁| = .5, .5, 1, .5, .5, 1: dropping ⌊(2/6)·6⌋ = 2 removes x=3 and x=12.
  np.testing.assert_allclose(lf.knn_agreement(X_LINE, Y_LINE, k=2), [0.5, 0.5, 0.0, 0.5, 0.5, 0.0])
  keep = lf.filter_weak_labels(X_LINE, Y_LINE, method="knn", k=2, drop_frac=2 / 6)
  np.testing.assert_array_equal(keep, [True, True, False, True, True, False])
  # Relabelling those two only flips them; relabel_frac = 1 (the reference) replaces every label by q.
  new = lf.relabel_weak_labels(X_LINE, Y_LINE, method="knn", k=2, relabel_frac=2 / 6)
  np.testing.assert_allclose(new, np.eye(2)[[1, 1, 1, 0, 0, 0]])
  np.testing.assert_allclose(lf.relabel_weak_labels(X_LINE, Y_LINE, method="knn", k=2), q)


def test_knn_worked_example_with_self_as_the_reference():
  # include_self: each vote is (own label + nearest other) / 2:
  #   x=0: 1, 1 → 1;  x=1: 1, 1 → 1;  x=3: 0, 1 → .5;
  #   x=10: 0, 0 → 0;  x=11: 0, 0 (tie → x=10) → 0;  x=12: 1, 0 → .5.
  q = lf.knn_predictions(X_LINE, Y_LINE, k=2, include_self=True)
  np.testing.assert_allclose(q[:, 1], [1.0, 1.0, 0.5, 0.0, 0.0, 0.5])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_brute_force(metric):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5))
  y = rng.dirichlet(np.ones(3), 40)
  dist = cdist(x, x, metric=metric)
  np.fill_diagonal(dist, np.inf)
  expected = np.stack([y[np.argsort(row)[:7]].mean(0) for row in dist])
  np.testing.assert_allclose(lf.knn_predictions(x, y, k=7, metric=metric), expected, atol=1e-12)
  np.testing.assert_array_equal(lf.knn_indices(x, k=7, metric=metric, chunk=6),
                                lf.knn_indices(x, k=7, metric=metric))


@pytest.mark.parametrize("include_self", [False, True])
def test_knn_with_k_at_least_n_drops_the_minority(include_self):
  """k ≥ N: every vote is (nearly) the global mean, so the minority label is the one dropped."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(10, 3))
  y = np.eye(2)[[1, 0, 1, 1, 0, 1, 1, 0, 1, 1]]
  keep = lf.filter_weak_labels(x, y, method="knn", k=100, drop_frac=0.3, include_self=include_self)
  np.testing.assert_array_equal(keep, y[:, 1] == 1)


def test_relabel_with_agreeing_labels_is_identity():
  """Each cluster carries one soft label; the kNN vote (and a weakly regularised probe) returns it."""
  rng = np.random.default_rng(2)
  cluster = np.arange(30) % 2
  x = 1e-4 * rng.normal(size=(30, 3)) + 5.0 * cluster[:, None]
  y = np.where(cluster[:, None] == 1, [0.2, 0.8], [0.9, 0.1])
  np.testing.assert_allclose(lf.relabel_weak_labels(x, y, method="knn", k=5), y, atol=1e-6)
  np.testing.assert_allclose(
    lf.relabel_weak_labels(x, y, method="probe", l2_penalty=1e-6, standardize=False), y, atol=1e-3)
  keep = lf.filter_weak_labels(x, y, method="knn", k=5, drop_frac=0.0)
  assert keep.all()


def _newton_logistic(x, y1, lam, iters=50):
  """Independent reference: Newton's method on mean BCE(σ(x·w + b), y₁) + λ‖w‖²."""
  xb = np.hstack([x, np.ones((len(x), 1))])
  reg = 2 * lam * np.diag(np.r_[np.ones(x.shape[1]), 0.0])
  theta = np.zeros(xb.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-xb @ theta))
    grad = xb.T @ (p - y1) / len(x) + reg @ theta
    hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(x) + reg
    theta -= np.linalg.solve(hess, grad)
  return theta[:-1], theta[-1]


def test_logistic_probe_matches_newton_reference():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(80, 4))
  y1 = 1 / (1 + np.exp(-(x @ [1.0, -2.0, 0.5, 0.0] + 0.3 + rng.normal(size=80))))
  y = np.stack([1 - y1, y1], 1)
  w_ref, b_ref = _newton_logistic(x, y1, lam=1e-2)
  w, b = lf.fit_logistic_probe(x, y, l2_penalty=1e-2)
  np.testing.assert_allclose(w[:, 0], w_ref, atol=1e-5)
  assert b[0] == pytest.approx(b_ref, abs=1e-5)
  # folds = 1, no standardisation: the reference's in-sample probe.
  q = lf.probe_predictions(x, y, folds=1, l2_penalty=1e-2, standardize=False)
  np.testing.assert_allclose(q[:, 1], 1 / (1 + np.exp(-(x @ w_ref + b_ref))), atol=1e-5)


def test_multiclass_probe_is_stationary():
  """C = 3 (class 0 as baseline): the gradient of mean CE + λ‖W‖² vanishes at the returned (W, b)."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(50, 3))
  y = rng.dirichlet(np.ones(3), 50)
  w, b = lf.fit_logistic_probe(x, y, l2_penalty=1e-2)
  z = np.hstack([np.zeros((50, 1)), x @ w + b])
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  r = (p - y)[:, 1:] / 50
  np.testing.assert_allclose(x.T @ r + 2e-2 * w, 0.0, atol=1e-6)
  np.testing.assert_allclose(r.sum(0), 0.0, atol=1e-6)


@pytest.mark.parametrize("method,kwargs", [("knn", {"k": 5}), ("probe", {"folds": 4})])
def test_held_out_prediction_ignores_own_label(method, kwargs):
  """Leave-one-out kNN and cross-fitted probes never see y_n when predicting q_n."""
  x, y, _ = _two_clusters(n=40, seed=5)
  q = lf._predictions(method, x, y, 0, kwargs)
  y2 = y.copy()
  y2[7] = 1 - y2[7]
  q2 = lf._predictions(method, x, y2, 0, kwargs)
  np.testing.assert_allclose(q2[7], q[7], atol=1e-9)
  assert not np.allclose(q2, q, atol=1e-6)   # other predictions do see it
  if method == "probe":   # the in-sample reference does see it
    q_in = lf.probe_predictions(x, y, folds=1)
    q2_in = lf.probe_predictions(x, y2, folds=1)
    assert abs(q2_in[7, 1] - q_in[7, 1]) > 1e-3


@pytest.mark.parametrize("name", ["knn_drop", "probe_drop", "topo_drop"])
def test_drop_filters_remove_flipped_labels(name):
  x, y, flipped = _two_clusters(n=100, flip=0.1, seed=6)
  soft, keep = lf.LABEL_FILTERS[name](x, y, seed=0, drop_frac=0.1, **({"k_cc": 10, "k_zeta": 10}
                                                                        if name == "topo_drop" else {}))
  np.testing.assert_array_equal(soft, y)
  if name == "topo_drop":   # its component step may overshoot the target share (the reference warns)
    assert 85 <= keep.sum() <= 90
  else:
    assert keep.sum() == 90
  assert flipped[~keep].mean() >= 0.8


@pytest.mark.parametrize("name", ["knn_relabel", "probe_relabel"])
def test_relabel_filters_repair_flipped_labels(name):
  x, y, flipped = _two_clusters(n=100, flip=0.1, seed=7)
  truth = np.arange(100) % 2
  soft, keep = lf.LABEL_FILTERS[name](x, y, seed=0)
  assert keep.all() and soft.dtype == np.float32
  np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
  assert (soft.argmax(1) == truth).mean() >= 0.97 > (y.argmax(1) == truth).mean()


def test_topo_filter_worked_example():
  # Indices 0..7 at x = 0, 1, 2, 21.5 | 20, 21, 22, 23; classes 0, 0, 0, 0 | 1, 1, 1, 1; row 7 soft [.4, .6].
  # k_cc = 3 neighbours (ties to the lower index):
  #   0 → 1, 2, 4;  1 → 0, 2, 4;  2 → 1, 0, 4;  3 → 5, 6, 4;
  #   4 → 5, 3, 6;  5 → 3, 4, 6;  6 → 3, 5, 7;  7 → 6, 3, 5.
  # Class 0's subgraph: 0, 1, 2 reach each other; 3 (x = 21.5) has no edge inside class 0 → dropped.
  # Class 1's subgraph: 4 → 5, 6; 5 → 4, 6; 6 → 5, 7; 7 → 6, 5: one component, all kept.
  x = np.array([0.0, 1.0, 2.0, 21.5, 20.0, 21.0, 22.0, 23.0])[:, None]
  y = np.eye(2)[[0, 0, 0, 0, 1, 1, 1, 1]]
  y[7] = [0.4, 0.6]
  keep = lf.topo_filter(x, y, drop_frac=0.125, k_cc=3, k_zeta=2)   # round(1) − 1 dropped = 0 more
  np.testing.assert_array_equal(keep, [1, 1, 1, 0, 1, 1, 1, 1])
  # drop_frac .25: round(2) − 1 = 1 more, by k_zeta = 2 disagreement within the 7 kept: row 7's
  # neighbours 6, 5 vote [0, 1] against its [.4, .6] → d = .4, the largest (row 6: ½(.2 + .2) = .2).
  keep = lf.topo_filter(x, y, drop_frac=0.25, k_cc=3, k_zeta=2)
  np.testing.assert_array_equal(keep, [1, 1, 1, 0, 1, 1, 1, 0])


def test_registry_signature_and_errors():
  x, y, _ = _two_clusters(n=20, seed=8)
  assert set(lf.LABEL_FILTERS) == {"none", "knn_drop", "knn_relabel", "probe_drop", "probe_relabel",
                                   "topo_drop"}
  for name in lf.LABEL_FILTERS:
    soft, keep = lf.apply_label_filter(name, x, y, seed=3)
    assert soft.shape == y.shape and keep.shape == (20,) and keep.dtype == bool
  soft, keep = lf.apply_label_filter("none", x, y)
  np.testing.assert_array_equal(soft, y)
  assert keep.all()
  with pytest.raises(ValueError, match="knn_drop"):
    lf.apply_label_filter("knn", x, y)
  with pytest.raises(ValueError, match="summing to 1"):
    lf.knn_drop(x, y[:, 1:], seed=0)
  with pytest.raises(ValueError, match="drop_frac"):
    lf.knn_drop(x, y, seed=0, drop_frac=1.5)
  with pytest.raises(ValueError, match="metric"):
    lf.knn_relabel(x, y, seed=0, metric="manhattan")
