"""The `lora` training mode of the weak-to-strong protocol: adapters + classifier head, frozen backbone.

The classifier is the pretrained backbone with zero-initialised LoRA adapters (`models/lora.py`) on the
chosen projections and a zero-initialised head. Only the adapters and the head are trained: they are the
state's `params` (and the only optimizer state); the backbone's weights travel in `state.frozen` through
the project's one train step (`train/step.py: make_train_step`). This is how a 135M pretrained rung is
fine-tuned on a CPU: optimizer memory and the update are those of a few hundred thousand parameters
(the backward pass still runs through the whole model).

Each training is short and its result is saved by the sweep, so it is not checkpointed mid-way: an
interrupted lora training restarts from step 0 when the sweep resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from w2s_jax.models.heads import ClassifierHead, SequenceClassifier
from w2s_jax.models.lora import LoRAParam, apply_lora
from w2s_jax.train.pretrain import Rung
from w2s_jax.train.state import create_train_state
from w2s_jax.train.step import make_train_step
from w2s_jax.w2s import classify

TRAINABLE = nnx.Any(LoRAParam, nnx.All(nnx.Param, nnx.PathContains("head")))


def lora_classifier(rung: Rung, *, targets: Sequence[str], rank: int, alpha: float, seed: int
                    ) -> SequenceClassifier:
  """The rung's backbone with fresh LoRA adapters on `targets` and a zero-initialised 2-class head."""
  cfg = rung.model_cfg
  model = nnx.eval_shape(lambda: SequenceClassifier(cfg, 2, zero_init=True, rngs=nnx.Rngs(0)))
  nnx.update(model.backbone, rung.params)  # no random init of a backbone that is overwritten anyway
  model.head = ClassifierHead(cfg.d_model, 2, zero_init=True, param_dtype=cfg.param_dtype,
                              rngs=nnx.Rngs(seed))
  apply_lora(model.backbone, targets=targets, rank=rank, alpha=alpha, rngs=nnx.Rngs(seed))
  return model


def lora_finetune(
  rung: Rung, train: classify.Encoded, evals: Sequence[classify.Encoded], loss: str, *, steps: int,
  batch_size: int, lr: float, seed: int, targets: Sequence[str] = ("q", "v"), rank: int = 8,
  alpha: float = 16.0, loss_kwargs: dict[str, Any] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
  """Trains adapters + head on `train`; returns class probabilities [N, 2] on each of `evals`.

  Returns:
    (probabilities per eval set, {"final_train_loss", "trainable_params"}).
  """
  model = lora_classifier(rung, targets=targets, rank=rank, alpha=alpha, seed=seed)
  graphdef, trainable, frozen = nnx.split(model, TRAINABLE, ...)
  tx = optax.adamw(lr, weight_decay=0.0)
  state = create_train_state(trainable, tx, seed)
  objective = classify.classifier_objective(loss, **(loss_kwargs or {}))
  train_step = make_train_step(objective, tx, graphdef)

  def step(state, frozen, batch):  # the backbone goes in (never donated: it is the rung's) but not out
    new, metrics = train_step(state.replace(frozen=frozen), batch)
    return new.replace(frozen=None), metrics

  step = jax.jit(step, donate_argnums=0)
  batches = classify.Batches(train, batch_size, steps, seed)
  metrics: dict[str, Any] = {}
  for i in tqdm(range(steps), desc="lora", unit="step", leave=False):
    state, metrics = step(state, frozen, batches[i])
  params = nnx.merge_state(state.params, frozen)
  probs = [classify.predict(graphdef, params, d) for d in evals]
  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  final = float(metrics["loss"]) if metrics else None
  return probs, {"final_train_loss": final, "trainable_params": n_trainable}
