"""Sequence classification for the weak-to-strong protocol: encoding, objective, prediction, probes.

Records follow openai/weak-to-strong: `{"txt": str, "hard_label": int, "soft_label": [p_0, ..., p_C-1]}`.
Texts are encoded as BOS + tokens, truncated from the left (the candidate answer, which decides the
label, sits at the end) and right-padded; the classifier reads the last real token.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.losses.w2s import STEP_FRAC_LOSSES, W2S_LOSSES
from w2s_jax.models.heads import last_token_index
from w2s_jax.train.config_lib import optimizer_section
from w2s_jax.train.runtime import fit, fit_step
from w2s_jax.train.step import Batch, Objective


@dataclasses.dataclass
class Encoded:
  """A classification set as arrays.

  Attributes:
    tokens_NL: int32 token ids, right-padded.
    segment_ids_NL: int32, 1 on real tokens, 0 on padding.
    hard_N: int32 ground-truth labels.
    soft_NC: float32 label distribution used as the training target (ground truth one-hot, or weak).
    truncated: how many texts were cut to fit.
    rows_N: for a subset made by `take`, each example's index in the set it was first taken from
      (None for an encoded set itself): per-example results of the whole set can be indexed, not redone.
  """

  tokens_NL: np.ndarray
  segment_ids_NL: np.ndarray
  hard_N: np.ndarray
  soft_NC: np.ndarray
  truncated: int = 0
  rows_N: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.hard_N)

  def take(self, idx: np.ndarray) -> Encoded:
    rows = np.asarray(idx) if self.rows_N is None else self.rows_N[idx]
    return Encoded(self.tokens_NL[idx], self.segment_ids_NL[idx], self.hard_N[idx], self.soft_NC[idx],
                   rows_N=rows)

  def with_targets(self, soft_NC: np.ndarray) -> Encoded:
    return dataclasses.replace(self, soft_NC=np.asarray(soft_NC, np.float32))


def encode(records: Sequence[dict[str, Any]], tokenizer: Tokenizer, max_len: int, num_classes: int = 2
           ) -> Encoded:
  """Tokenizes records; targets start as one-hot ground truth."""
  n = len(records)
  tokens = np.full((n, max_len), tokenizer.pad_id, np.int32)
  seg = np.zeros((n, max_len), np.int32)
  hard = np.zeros(n, np.int32)
  truncated = 0
  for i, r in enumerate(records):
    ids = [tokenizer.bos_id, *tokenizer.encode(r["txt"])]
    if len(ids) > max_len:
      truncated += 1
      ids = [tokenizer.bos_id, *ids[len(ids) - max_len + 1:]]
    tokens[i, : len(ids)] = ids
    seg[i, : len(ids)] = 1
    label = int(r["hard_label"])
    if not 0 <= label < num_classes:
      raise ValueError(f"record {i}: hard_label {label} is outside [0, {num_classes})")
    hard[i] = label
  return Encoded(tokens, seg, hard, np.eye(num_classes, dtype=np.float32)[hard], truncated)


ExtraLoss = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def classifier_objective(loss: str = "xent", *, extra_loss: ExtraLoss | None = None, **loss_kwargs: Any
                         ) -> Objective:
  """Trains `model(tokens, segment_ids) -> logits_BC` on `batch["targets_BC"]` with a W2S loss by name.

  Losses: `W2S_LOSSES` (`xent`, `logconf`, `product`, `entropy`, `window`, `kl`, `confidence_penalty`),
  `loss_kwargs` passed through. The batch also carries `hard_B` (for accuracy against ground truth) and,
  for the losses in `STEP_FRAC_LOSSES` (`logconf`, `entropy`), `step_frac_B` (training progress, the same
  value in every row). `extra_loss(logits_BC, hard_B) -> (loss_B, aux)` adds
  a per-row term (e.g. the deception study's conflicting objective); each `aux` entry `<name>_B` is
  summed into the metric `<name>`.
  """
  if loss not in W2S_LOSSES:
    raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(W2S_LOSSES)}")
  fn = W2S_LOSSES[loss]

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    logits_BC = model(batch["tokens"], segment_ids_BL=batch["segment_ids"])
    kwargs = dict(loss_kwargs)
    if loss in STEP_FRAC_LOSSES:
      kwargs["step_frac"] = batch["step_frac_B"][0]
    loss_B, _ = fn(logits_BC, batch["targets_BC"], **kwargs)
    metrics = {}
    if extra_loss is not None:
      extra_B, aux = extra_loss(logits_BC, batch["hard_B"])
      loss_B = loss_B + extra_B
      metrics = {k.removesuffix("_B"): jnp.sum(v) for k, v in aux.items()}
    correct_B = (jnp.argmax(logits_BC, -1) == batch["hard_B"]).astype(jnp.float32)
    weight = jnp.asarray(loss_B.shape[0], jnp.float32)
    return jnp.sum(loss_B), weight, {"accuracy": jnp.sum(correct_B), **metrics}

  return objective


class Batches:
  """Random-access training batches over epochs reshuffled by seed: `batches[i]` is step i's batch."""

  def __init__(self, data: Encoded, batch_size: int, total_steps: int, seed: int):
    if len(data) < batch_size:
      raise ValueError(f"{len(data)} examples cannot fill a batch of {batch_size}")
    self.data, self.batch_size, self.total_steps, self.seed = data, batch_size, total_steps, seed
    self.per_epoch = len(data) // batch_size
    self._order = functools.lru_cache(maxsize=2)(
      lambda epoch: np.random.default_rng([seed, epoch]).permutation(len(data))
    )

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(i, self.per_epoch)
    order = self._order(epoch)
    idx = order[j * self.batch_size:(j + 1) * self.batch_size]
    d = self.data
    return {
      "tokens": d.tokens_NL[idx], "segment_ids": d.segment_ids_NL[idx], "targets_BC": d.soft_NC[idx],
      "hard_B": d.hard_N[idx], "step_frac_B": np.full(len(idx), i / self.total_steps, np.float32),
    }


@functools.partial(jax.jit, static_argnums=0)
def _probs(graphdef: nnx.GraphDef, p: Any, t: jax.Array, s: jax.Array) -> jax.Array:
  return jax.nn.softmax(nnx.merge(graphdef, p)(t, segment_ids_BL=s), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _last_hidden(graphdef: nnx.GraphDef, p: Any, t: jax.Array, s: jax.Array) -> jax.Array:
  h_BLD = nnx.merge(graphdef, p).hidden(t, segment_ids_BL=s)
  last_B = last_token_index(s)
  return jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0].astype(jnp.float32)


def _map_batches(fn, graphdef: nnx.GraphDef, params: Any, data: Encoded, batch_size: int) -> np.ndarray:
  """Applies a module-level jitted `fn(graphdef, params, tokens, segment_ids)` to every example; the
  last batch is padded so that one compiled shape serves all (and every call after the first)."""
  out = []
  for start in range(0, len(data), batch_size):
    t = data.tokens_NL[start:start + batch_size]
    s = data.segment_ids_NL[start:start + batch_size]
    n = len(t)
    if n < batch_size:
      t = np.concatenate([t, np.repeat(t[-1:], batch_size - n, 0)])
      s = np.concatenate([s, np.repeat(s[-1:], batch_size - n, 0)])
    out.append(np.asarray(fn(graphdef, params, t, s))[:n])
  return np.concatenate(out)


def predict(graphdef: nnx.GraphDef, params: Any, data: Encoded, batch_size: int = 64) -> np.ndarray:
  """Class probabilities [N, C] of a classifier model on every example."""
  return _map_batches(_probs, graphdef, params, data, batch_size)


def features(graphdef: nnx.GraphDef, params: Any, data: Encoded, batch_size: int = 64) -> np.ndarray:
  """Frozen-backbone features [N, D]: the final hidden state at each example's last real token.

  `graphdef`/`params` are a `Transformer` backbone's.
  """
  return _map_batches(_last_hidden, graphdef, params, data, batch_size)


def default_optimizer(lr: float, steps: int) -> dict[str, Any]:
  """The optimizer of a classifier training whose caller names only `lr`: the runtime's sub-run default
  (`config_lib.train_defaults`: AdamW, 5 % warmup, cosine to 10 %, weight decay 0.01, clip 1.0)."""
  return optimizer_section(lr, warmup_steps=max(steps // 20, 1)).to_dict()


@functools.lru_cache(maxsize=8)
def _compiled(graphdef: nnx.GraphDef, loss: str, loss_kwargs: str, optimizer: str, steps: int
              ) -> tuple[Any, Any]:
  """`runtime.fit_step` of a classifier objective: one compilation per architecture, loss and optimizer,
  shared by every seed and weak supervisor of a sweep (arguments as JSON, so that they hash)."""
  objective = classifier_objective(loss, **json.loads(loss_kwargs))
  return fit_step(objective, graphdef, json.loads(optimizer), steps)


def fit_classifier(
  graphdef: nnx.GraphDef, trainable: Any, frozen: Any, train: Encoded, loss: str, *, steps: int,
  batch_size: int, optimizer: Mapping[str, Any], seed: int, loss_kwargs: Mapping[str, Any] | None = None,
  desc: str = "fit",
) -> tuple[Any, dict[str, Any]]:
  """Trains the `trainable` part of a classifier (`frozen`: the rest, or None) on `train` with a W2S loss,
  in memory, through the runtime's optimizer builder and train step (`runtime.fit`).

  Returns:
    (the whole model's trained state, {"final_train_loss", "trainable_params"}).
  """
  tx, step = _compiled(graphdef, loss, json.dumps(dict(loss_kwargs or {}), sort_keys=True),
                       json.dumps(dict(optimizer), sort_keys=True), steps)
  state, metrics = fit(step, tx, trainable, Batches(train, batch_size, steps, seed), steps=steps, seed=seed,
                       frozen=frozen, desc=desc)
  full = state.params if frozen is None else nnx.merge_state(state.params, frozen)
  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return full, {"final_train_loss": float(metrics["loss"]) if metrics else None,
                "trainable_params": n_trainable}


class LinearProbe(nnx.Module):
  """logits = x @ w + b on feature rows, zero-initialised (as openai/weak-to-strong); called like a
  `SequenceClassifier` (the features stand where token ids would), so the classifier objective drives it."""

  def __init__(self, d: int, c: int):
    self.w = nnx.Param(jnp.zeros((d, c), jnp.float32))
    self.b = nnx.Param(jnp.zeros((c,), jnp.float32))

  def __call__(self, x_BD: jax.Array, *, segment_ids_BL: jax.Array | None = None) -> jax.Array:
    del segment_ids_BL
    return x_BD @ self.w[...] + self.b[...]


def train_linear_probe(
  feats_ND: np.ndarray, targets_NC: np.ndarray, *, loss: str = "xent", steps: int = 300, lr: float = 1e-2,
  batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0,
  optimizer: Mapping[str, Any] | None = None, **loss_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
  """Trains a linear head (zero-initialised) on frozen features with a W2S loss (`fit_classifier`).

  Features are standardised with their own mean and std first (returned folded into the weights).
  `optimizer`: an `optimizer` section; None = constant-rate AdamW of `lr` and `weight_decay`, no clipping.

  Returns:
    (w_DC, b_C) such that logits = feats @ w + b.
  """
  mu, sd = feats_ND.mean(0), feats_ND.std(0) + 1e-6
  x_ND = ((feats_ND - mu) / sd).astype(np.float32)
  targets_NC = np.asarray(targets_NC, np.float32)
  n, d = x_ND.shape
  c = targets_NC.shape[1]
  data = Encoded(x_ND, np.ones((n, 1), np.int32), targets_NC.argmax(1).astype(np.int32), targets_NC)
  if optimizer is None:
    optimizer = optimizer_section(lr, warmup_steps=0, schedule="constant", weight_decay=weight_decay,
                                  b2=0.999, clip_norm=0.0).to_dict()
  graphdef, params = nnx.split(LinearProbe(d, c))
  params, _ = fit_classifier(graphdef, params, None, data, loss, steps=steps, batch_size=min(batch_size, n),
                             optimizer=optimizer, seed=seed, loss_kwargs=loss_kwargs, desc="probe")
  w_DC, b_C = np.asarray(params["w"][...]), np.asarray(params["b"][...])
  return w_DC / sd[:, None], b_C - (mu / sd) @ w_DC
