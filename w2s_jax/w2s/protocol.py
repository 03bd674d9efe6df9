"""The weak-to-strong protocol (Burns et al. 2023) as one resumable sweep.

For each seed: the training set is split 50/50 into A and B. Every model size is trained on A with
ground truth; its test accuracy is that size's ceiling, and its soft predictions on B are the labels it
gives as a weak supervisor (averaged over an ensemble of k weak models when asked; optionally with a
share of them flipped, for noise studies). For every pair weak < strong and every loss, the strong
model is trained on B with the weak labels; PGR = (transfer − weak) / (ceiling − weak).

Each training is a run folder under `WORKDIR/runs/` with its own checkpoints and `result.json`, so an
interrupted sweep resumes where it stopped. Modes (`MODES`): `finetune` (the whole model, from the
pretrained backbone plus a zero-initialised head), `probe` (a linear head on frozen backbone features),
`lora` (LoRA adapters + head on a frozen backbone, `lora_mode.py`), and, for `gguf:`/`hf:` rungs only,
`top` / `top_lora` (the top `top_blocks` blocks + final norm + head, or LoRA on them, trained on the
cached residual stream below them: `top_mode.py`). For checkpoint rungs, `probe`, `top` and `top_lora`
read their frozen features from the disk cache (`feature_cache.py`): one forward pass per checkpoint and
data set serves every truncated rung, seed and loss.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from w2s_jax.evals.metrics import accuracy, auroc, bootstrap_ci
from w2s_jax.models.heads import SequenceClassifier
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import Setup
from w2s_jax.train.loop import train as run_train
from w2s_jax.train.pretrain import Rung
from w2s_jax.train.step import Objective
from w2s_jax.w2s import classify, label_filters, top_mode
from w2s_jax.w2s import rungs as rung_lib
from w2s_jax.w2s.feature_cache import FeatureCache, Request
from w2s_jax.w2s.lora_mode import lora_finetune
from w2s_jax.w2s.metrics import pgr
from w2s_jax.w2s.rungs import is_pretrained

MODES = ("finetune", "probe", "lora", "top", "top_lora")
CACHED_MODES = ("top", "top_lora")  # modes that need a checkpoint rung (cached residual stream)


@dataclasses.dataclass
class TrainSpec:
  """How each classifier is trained."""

  mode: str = "finetune"  # one of MODES
  pretrained_mode: str = ""  # the mode of checkpoint rungs (gguf:/hf:, e.g. "top" for a 135M model on CPU)
  steps: int = 200
  batch_size: int = 16
  lr: float = 5e-4
  probe_steps: int = 300
  probe_lr: float = 1e-2
  loss_kwargs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  mesh: dict[str, int] = dataclasses.field(default_factory=lambda: {"data": -1})
  lora_targets: tuple[str, ...] = ("q", "v")
  lora_rank: int = 8
  lora_alpha: float = 16.0
  top_blocks: int = 1  # `top`/`top_lora`: blocks trained above the cached trunk
  pooling: str = "last"  # probe features of checkpoint rungs: "last" token or "mean" over real tokens
  cache_dir: str = ""  # feature cache folder; "" = pretrain.cache_root() / "features"
  cache_dtype: str = "float32"  # stored dtype of cached per-token states ("float16" halves the disk)
  label_filter: str = "none"  # label_filters.LABEL_FILTERS key, applied to each strong student's weak labels
  label_filter_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  # `optimizer` sections (config `train.optimizer`, `train.probe_optimizer`); None = built from lr / probe_lr
  optimizer: dict[str, Any] | None = None
  probe_optimizer: dict[str, Any] | None = None


def split_halves(n: int, seed: int, groups: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """A random 50/50 split of range(n) into (A, B) index arrays.

  With `groups` (one key per example, e.g. its question), whole groups go to one half: half the groups
  (in a seeded order) to A, the rest to B, so no question is in both halves.
  """
  if groups is None:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
  if len(groups) != n:
    raise ValueError(f"groups has {len(groups)} keys for {n} examples")
  keys = list(dict.fromkeys(groups))  # first-seen order: the split does not depend on hashing
  in_a = {keys[i] for i in np.random.default_rng(seed).permutation(len(keys))[: len(keys) // 2]}
  mask = np.array([g in in_a for g in groups], bool)
  return np.flatnonzero(mask), np.flatnonzero(~mask)


def add_label_noise(soft_NC: np.ndarray, frac: float, seed: int) -> np.ndarray:
  """Swaps the class probabilities (binary) of a random `frac` of the rows."""
  if frac <= 0:
    return soft_NC
  out = soft_NC.copy()
  rows = np.random.default_rng(seed).random(len(out)) < frac
  out[rows] = out[rows][:, ::-1]
  return out


def _scores(probs_NC: np.ndarray, hard_N: np.ndarray) -> dict[str, float]:
  p_true = np.clip(probs_NC[np.arange(len(hard_N)), hard_N], 1e-12, 1.0)
  scores = {"accuracy": accuracy(probs_NC, hard_N), "test_loss": float(-np.mean(np.log(p_true)))}
  if probs_NC.shape[1] == 2 and 0 < hard_N.mean() < 1:
    scores["auroc"] = auroc(probs_NC[:, 1], hard_N)
  return scores


def train_classifier(
  rung: Rung, train: classify.Encoded, loss: str, spec: TrainSpec, seed: int, workdir: Path, *,
  objective: Objective | None = None,
) -> tuple[nnx.GraphDef, Any, float | None]:
  """Fine-tunes backbone + a fresh zero-initialised 2-class head on `train` through the train loop
  (resumable in `workdir`).

  Args:
    rung: the backbone (its config and params).
    train: the encoded training set (soft labels are the targets).
    loss: a W2S loss name (`classify.classifier_objective`), with `spec.loss_kwargs[loss]`.
    spec, seed, workdir: training settings, seed and the run's folder.
    objective: a different objective for the same classifier batches (e.g. with an extra term);
      None = `classify.classifier_objective(loss)`.

  Returns:
    (graphdef, params) of the trained `SequenceClassifier`, and the last logged training loss.
  """

  config = train_defaults(total_steps=spec.steps, batch_size=spec.batch_size, seed=seed,
                          **({"optimizer": spec.optimizer} if spec.optimizer else {"lr": spec.lr}))
  config.mesh.update(spec.mesh)
  config.log_every_steps = max(spec.steps // 20, 1)

  def init_params():
    model = SequenceClassifier(rung.model_cfg, 2, zero_init=True, rngs=nnx.Rngs(seed))
    nnx.update(model.backbone, rung.params)
    return nnx.split(model)[1]

  setup = Setup(
    make_model=lambda rngs: SequenceClassifier(rung.model_cfg, 2, zero_init=True, rngs=rngs),
    objective=objective or classify.classifier_objective(loss, **spec.loss_kwargs.get(loss, {})),
    train_batches=classify.Batches(train, spec.batch_size, spec.steps, seed),
    eval_batches=[],  # no in-loop eval (eval_every_steps = 0): callers predict after training
    init_params=init_params,
  )
  summary = run_train(config, workdir, setup)
  graphdef = nnx.split(nnx.eval_shape(lambda: setup.make_model(nnx.Rngs(0))))[0]
  return graphdef, summary["state"].params, (summary.get("last") or {}).get("loss")


def finetune(rung: Rung, train: classify.Encoded, evals: Sequence[classify.Encoded], loss: str,
             spec: TrainSpec, seed: int, workdir: Path, *, objective: Objective | None = None,
             ) -> tuple[list[np.ndarray], dict[str, Any]]:
  """`train_classifier`, then its class probabilities [N, 2] on each of `evals` (evals[0] = test by
  convention) and {"final_train_loss"}."""
  graphdef, params, last_loss = train_classifier(rung, train, loss, spec, seed, workdir, objective=objective)
  return [classify.predict(graphdef, params, d) for d in evals], {"final_train_loss": last_loss}


def _softmax(z_NC: np.ndarray) -> np.ndarray:
  e = np.exp(z_NC - z_NC.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _probe(train_feats: np.ndarray, train: classify.Encoded, eval_feats: Sequence[np.ndarray], loss: str,
           spec: TrainSpec, seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
  """Fits a linear head on frozen features; returns probabilities on each of `eval_feats`."""
  w, b = classify.train_linear_probe(train_feats, train.soft_NC, loss=loss, steps=spec.probe_steps,
                                     lr=spec.probe_lr, seed=seed, optimizer=spec.probe_optimizer,
                                     **spec.loss_kwargs.get(loss, {}))
  return [_softmax(f @ w + b) for f in eval_feats], {}


class Sweep:
  """Runs (or resumes) every training of a weak-to-strong sweep and collects the results.

  `train`/`test` are the records as every rung reads them, unless `per_rung` maps a rung's `preset` to
  its own `(train, test)` encoding (a pretrained rung with its own tokenizer): the same records in the
  same order, so the A/B split and the weak labels carry over between rungs.
  """

  def __init__(self, rungs: Sequence[Rung], train: classify.Encoded, test: classify.Encoded,
               spec: TrainSpec, workdir: Path,
               per_rung: Mapping[str, tuple[classify.Encoded, classify.Encoded]] | None = None,
               groups: Sequence[Any] | None = None):
    self.rungs, self.train, self.test, self.spec = list(rungs), train, test, spec
    self.groups = None if groups is None else list(groups)  # train examples' questions: halves split by them
    self.workdir = Path(workdir)
    self.per_rung = dict(per_rung or {})
    for name, (tr, te) in self.per_rung.items():
      if not (np.array_equal(tr.hard_N, train.hard_N) and np.array_equal(te.hard_N, test.hard_N)):
        raise ValueError(f"rung {name!r}: its encoded sets do not hold the same records as the sweep's")
    self._feature_cache: dict[tuple[str, str], np.ndarray] = {}
    self.cache = FeatureCache(spec.cache_dir or None, dtype=spec.cache_dtype)
    for rung in self.rungs:
      if self.mode_of(rung) not in MODES:
        raise ValueError(f"rung {rung.preset!r}: unknown mode {self.mode_of(rung)!r}; choose one of {MODES} "
                         "(train.mode / train.pretrained_mode)")
      if self.mode_of(rung) in CACHED_MODES and not is_pretrained(rung.source or rung.preset):
        raise ValueError(f"rung {rung.preset!r}: mode {self.mode_of(rung)!r} trains above the cached trunk "
                         "of a gguf:/hf: checkpoint; use it as train.pretrained_mode, not train.mode")

  def sets(self, rung: Rung) -> tuple[classify.Encoded, classify.Encoded]:
    """(train, test) as `rung` reads them."""
    return self.per_rung.get(rung.preset, (self.train, self.test))

  def mode_of(self, rung: Rung) -> str:
    """How `rung` is trained: `spec.pretrained_mode` for a checkpoint rung when set, else `spec.mode`."""
    if self.spec.pretrained_mode and is_pretrained(rung.source or rung.preset):
      return self.spec.pretrained_mode
    return self.spec.mode

  def request(self, rung: Rung) -> Request | None:
    """What a checkpoint rung reads from the feature cache in its mode (None: nothing)."""
    mode = self.mode_of(rung)
    if not is_pretrained(rung.source or rung.preset) or mode not in ("probe", *CACHED_MODES):
      return None
    k = rung.model_cfg.n_layers
    if mode == "probe":
      return Request(k, self.spec.pooling)
    if not 1 <= self.spec.top_blocks <= k:
      raise ValueError(f"train.top_blocks = {self.spec.top_blocks}: rung {rung.preset!r} has {k} blocks")
    return Request(k - self.spec.top_blocks, "tokens")

  def prefetch(self) -> None:
    """Fills the feature cache for every checkpoint rung: per checkpoint and set, one forward pass."""
    by_ckpt: dict[str, list[Rung]] = {}
    for rung in self.rungs:
      if self.request(rung) is not None:
        by_ckpt.setdefault(rung_lib.tokenizer_key(rung), []).append(rung)
    for base, members in by_ckpt.items():
      requests = [self.request(r) for r in members]
      for data in self.sets(members[0]):
        print(f"[features] {base}: {sorted({(q.kind, q.layer) for q in requests})} for {len(data)} examples",
              flush=True)
        self.cache.get(rung_lib.checkpoint(base), data, requests)

  def _cached(self, rung: Rung, data: classify.Encoded) -> np.ndarray:
    """The rung's cached array (`request`) for `data`: its test set or a subset `take`n from its train set."""
    train, test = self.sets(rung)
    full = test if data is test else train
    if data is not test and (data.rows_N is None or len(train) <= int(np.max(data.rows_N, initial=-1))):
      raise ValueError(f"rung {rung.preset!r}: cached features exist only for its train and test sets")
    array = self.cache.get(rung_lib.checkpoint(rung_lib.tokenizer_key(rung)), full, [self.request(rung)])
    array = next(iter(array.values()))
    return array if data is test else array[data.rows_N]

  def features(self, rung: Rung, data: classify.Encoded) -> np.ndarray:
    """Frozen features of `data` (the rung's test set, or a subset `take`n from its train set); each
    set's features are computed once per rung and subsets index them. Checkpoint rungs read the disk
    cache (`train.pooling`); ladder rungs their last-token feature, kept in memory."""
    if self.request(rung) is not None:
      return self._cached(rung, data)
    train, test = self.sets(rung)
    if data is test:
      key, full = "test", test
    elif data.rows_N is not None and np.array_equal(train.tokens_NL[data.rows_N], data.tokens_NL):
      key, full = "train", train
    else:
      return classify.features(rung.graphdef, rung.params, data)
    if (rung.preset, key) not in self._feature_cache:
      self._feature_cache[(rung.preset, key)] = classify.features(rung.graphdef, rung.params, full)
    feats = self._feature_cache[(rung.preset, key)]
    return feats if key == "test" else feats[data.rows_N]

  def filter_features(self, rung: Rung, data: classify.Encoded) -> np.ndarray:
    """Features [N, D] of `data` in which a label filter looks for neighbours: the rung's frozen features, or
    for `top`/`top_lora` the cached residual state at the last real token (what its top blocks read there)."""
    if self.mode_of(rung) not in CACHED_MODES:
      return self.features(rung, data)
    states_NLD = self._cached(rung, data)
    last_N = np.maximum(data.segment_ids_NL[:, : states_NLD.shape[1]].sum(1) - 1, 0)
    return np.asarray(states_NLD[np.arange(len(last_N)), last_N], np.float32)

  def weak_set(self, weak: Rung, strong: Rung, half_b: classify.Encoded, soft_NC: np.ndarray, seed: int
               ) -> tuple[classify.Encoded, dict[str, Any]]:
    """The strong student's half B with `weak`'s labels, filtered or relabelled by `spec.label_filter`
    (`label_filters.LABEL_FILTERS`) in the strong rung's feature space; returns it and what the filter did."""
    data = half_b.with_targets(soft_NC)
    name = self.spec.label_filter
    if name == "none":
      return data, {}
    soft, keep = label_filters.apply_label_filter(
      name, self.filter_features(strong, data), data.soft_NC, seed=seed, **self.spec.label_filter_kwargs)
    kept = data.take(np.flatnonzero(keep)).with_targets(soft[keep])
    changed = float(np.mean(soft[keep].argmax(1) != data.soft_NC[keep].argmax(1)))
    return kept, {"label_filter": name, "kept_frac": float(keep.mean()), "relabelled_frac": changed}

  def _train_top(self, rung: Rung, train: classify.Encoded, evals: list[classify.Encoded], loss: str,
                 seed: int, name: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    sp = self.spec
    lora = None
    if self.mode_of(rung) == "top_lora":
      lora = {"targets": sp.lora_targets, "rank": sp.lora_rank, "alpha": sp.lora_alpha}
    hidden = [top_mode.as_hidden_set(d, self._cached(rung, d)) for d in [train, *evals]]
    return top_mode.train_top(rung.model_cfg, rung.params, hidden[0], hidden[1:], loss, n=sp.top_blocks,
                              steps=sp.steps, batch_size=sp.batch_size, lr=sp.lr, seed=seed, lora=lora,
                              loss_kwargs=sp.loss_kwargs.get(loss), desc=name, optimizer=sp.optimizer)

  def fit(
    self, name: str, rung: Rung, train: classify.Encoded, loss: str, seed: int,
    other: classify.Encoded | None = None,
  ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Trains one classifier, or reads its saved result.

    Args:
      name: run name (its folder under `WORKDIR/runs/`).
      rung: the pretrained base model.
      train: training examples with their targets.
      loss: W2S loss name.
      seed: training seed.
      other: a set to predict on as well (the weak model's half B), or None.

    Returns:
      (probabilities on `other` or None, result dict with test accuracy/AUROC).
    """
    run_dir = self.workdir / "runs" / name
    done, probs_file = run_dir / "result.json", run_dir / "other_probs.npy"
    if done.exists() and (other is None or probs_file.exists()):
      return (np.load(probs_file) if other is not None else None), json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    test = self.sets(rung)[1]
    evals = [test] + ([other] if other is not None else [])
    mode = self.mode_of(rung)
    print(f"[train] {name}: {rung.preset} ({mode}, loss {loss}, {len(train)} examples)", flush=True)
    start = time.perf_counter()
    if mode == "finetune":
      probs, extra = finetune(rung, train, evals, loss, self.spec, seed, run_dir)
    elif mode == "probe":
      feats = [self.features(rung, test)] + ([self.features(rung, other)] if other is not None else [])
      probs, extra = _probe(self.features(rung, train), train, feats, loss, self.spec, seed)
    elif mode == "lora":
      sp = self.spec
      probs, extra = lora_finetune(
        rung, train, evals, loss, steps=sp.steps, batch_size=sp.batch_size, lr=sp.lr, seed=seed,
        targets=sp.lora_targets, rank=sp.lora_rank, alpha=sp.lora_alpha, loss_kwargs=sp.loss_kwargs.get(loss),
        optimizer=sp.optimizer,
      )
    elif mode in CACHED_MODES:
      probs, extra = self._train_top(rung, train, evals, loss, seed, name)
    else:
      raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    result = {"name": name, "model": rung.preset, "loss": loss, "seed": seed, "mode": mode,
              **_scores(probs[0], test.hard_N), **extra}
    seconds = time.perf_counter() - start  # printed only: results.json stays the same on every run
    print(f"[done] {name}: test accuracy {100 * result['accuracy']:.1f} % ({seconds:.0f} s)", flush=True)
    if other is not None:
      np.save(probs_file, probs[1])
    done.write_text(json.dumps(result))
    return (probs[1] if other is not None else None), result

  def run(self, *, losses: Sequence[str], seeds: Sequence[int], ensemble: int = 1, label_noise: float = 0.0,
          on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every ground-truth and transfer training of the sweep; returns the raw results per seed."""
    self.prefetch()
    per_seed = []
    for seed in seeds:
      a_idx, b_idx = split_halves(len(self.train), seed, self.groups)
      halves = {r.preset: (self.sets(r)[0].take(a_idx), self.sets(r)[0].take(b_idx)) for r in self.rungs}
      hard_b = self.train.hard_N[b_idx]
      gt, weak_labels = {}, {}
      for rung in self.rungs:
        preds = []
        members = ensemble if rung is not self.rungs[-1] else 1  # the top rung supervises no one
        for j in range(members):  # an ensemble of k weak models averages their soft labels
          name = f"seed{seed}/gt-{rung.preset}" + (f"-m{j}" if j else "")
          half_a, half_b = halves[rung.preset]
          p_b, res = self.fit(name, rung, half_a, "xent", seed * 1000 + j, other=half_b)
          preds.append(p_b)
          if j == 0:
            gt[rung.preset] = res
            if on_result:
              on_result(res)
        weak_labels[rung.preset] = add_label_noise(np.mean(preds, 0), label_noise, seed)
      transfer = []
      for i, weak in enumerate(self.rungs):
        for strong in self.rungs[i + 1:]:
          for loss in losses:
            label = loss if self.spec.label_filter == "none" else f"{loss}+{self.spec.label_filter}"
            name = f"seed{seed}/w2s-{weak.preset}-to-{strong.preset}-{label}"
            half_b = halves[strong.preset][1]
            strong_b, filtered = self.weak_set(weak, strong, half_b, weak_labels[weak.preset], seed)
            _, res = self.fit(name, strong, strong_b, loss, seed)
            res = dict(res, **filtered, loss=label, weak=weak.preset, strong=strong.preset,
                       weak_label_acc=accuracy(weak_labels[weak.preset], hard_b),
                       pgr=pgr(gt[weak.preset]["accuracy"], gt[strong.preset]["accuracy"], res["accuracy"]))
            transfer.append(res)
            if on_result:
              on_result(res)
      per_seed.append({"seed": seed, "ground_truth": gt, "transfer": transfer})
    return {"per_seed": per_seed}

def summarize(raw: dict[str, Any], *, level: float = 0.95) -> dict[str, Any]:
  """Medians over seeds with bootstrap CIs: ceilings per size, transfer accuracy and PGR per pair/loss."""
  sizes: dict[str, list[float]] = {}
  pairs: dict[tuple[str, str, str], dict[str, list[float]]] = {}
  for s in raw["per_seed"]:
    for size, res in s["ground_truth"].items():
      sizes.setdefault(size, []).append(res["accuracy"])
    for t in s["transfer"]:
      d = pairs.setdefault((t["weak"], t["strong"], t["loss"]), {"accuracy": [], "pgr": []})
      d["accuracy"].append(t["accuracy"])
      d["pgr"].append(t["pgr"])

  def ci(values):
    values = [v for v in values if not np.isnan(v)]
    if not values:
      return {"median": None, "low": None, "high": None, "n": 0}
    med, lo, hi = bootstrap_ci(values, np.median, level=level)
    return {"median": med, "low": lo, "high": hi, "n": len(values)}

  return {
    "ceilings": {k: ci(v) for k, v in sizes.items()},
    "transfer": [
      {"weak": w, "strong": s, "loss": loss, "accuracy": ci(d["accuracy"]), "pgr": ci(d["pgr"])}
      for (w, s, loss), d in pairs.items()
    ],
  }


def sweep_spec(config: ml_collections.ConfigDict) -> TrainSpec:
  t = config.train
  if t.get("label_filter", "none") not in label_filters.LABEL_FILTERS:
    names = sorted(label_filters.LABEL_FILTERS)
    raise ValueError(f"train.label_filter = {t.label_filter!r}: choose one of {names}")
  return TrainSpec(mode=t.mode, pretrained_mode=t.get("pretrained_mode", ""), steps=t.total_steps,
                   batch_size=t.batch_size, lr=t.lr, probe_steps=t.probe_steps,
                   probe_lr=t.probe_lr, loss_kwargs=t.loss_kwargs.to_dict(),
                   mesh=dict(config.mesh), lora_targets=tuple(t.get("lora_targets", ("q", "v"))),
                   lora_rank=t.get("lora_rank", 8), lora_alpha=t.get("lora_alpha", 16.0),
                   top_blocks=t.get("top_blocks", 1), pooling=t.get("pooling", "last"),
                   cache_dir=_feature_dir(config), cache_dtype=t.get("cache_dtype", "float32"),
                   label_filter=t.get("label_filter", "none"),
                   label_filter_kwargs=_kwargs(t.get("label_filter_kwargs", "")),
                   optimizer=_section(t, "optimizer"), probe_optimizer=_section(t, "probe_optimizer"))


def _section(train: ml_collections.ConfigDict, key: str) -> dict[str, Any] | None:
  """`train.<key>` as a dict (an `optimizer` section), or None when the config has none."""
  return train[key].to_dict() if train.get(key) else None


def _kwargs(value: Any) -> dict[str, Any]:
  """A config's keyword section: a dict in a config file, or a JSON object string from the command line."""
  if isinstance(value, str):
    try:
      out = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as e:
      raise ValueError(f"train.label_filter_kwargs: not a JSON object ({e}): {value!r}") from None
  else:
    out = value.to_dict() if hasattr(value, "to_dict") else dict(value)
  if not isinstance(out, dict):
    raise ValueError(f"train.label_filter_kwargs: expected a JSON object, got {value!r}")
  return out


def _feature_dir(config: ml_collections.ConfigDict) -> str:
  """`train.cache_dir`, else `<ladder.cache_dir>/features` when that is set, else "" (the default root)."""
  if config.train.get("cache_dir"):
    return config.train.cache_dir
  ladder_dir = config.get("ladder", {}).get("cache_dir", "")
  return str(Path(ladder_dir) / "features") if ladder_dir else ""
