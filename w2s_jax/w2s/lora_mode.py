"""The `lora` training mode of the weak-to-strong protocol: adapters + classifier head, frozen backbone.

The classifier is the pretrained backbone with zero-initialised LoRA adapters (`models/lora.py`) on the
chosen projections and a zero-initialised head. Only the adapters and the head are trained (`lora.TRAINABLE`,
as a `model.lora` run of the runtime trains them): they are the state's `params` (and the only optimizer
state); the backbone's weights go into the one train step as its frozen argument (`classify.fit_classifier`,
the runtime's optimizer builder and step). This is how a 135M pretrained rung is fine-tuned on a CPU:
optimizer memory and the update are those of a few hundred thousand parameters (the backward pass still
runs through the whole model).

Each training is short and its result is saved by the sweep, so it is not checkpointed mid-way: an
interrupted lora training restarts from step 0 when the sweep resumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from w2s_jax.models.heads import ClassifierHead, SequenceClassifier
from w2s_jax.models.lora import TRAINABLE, apply_lora
from w2s_jax.train.pretrain import Rung
from w2s_jax.w2s import classify


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
  alpha: float = 16.0, loss_kwargs: dict[str, Any] | None = None, optimizer: Mapping[str, Any] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
  """Trains adapters + head on `train`; returns class probabilities [N, 2] on each of `evals`.

  `optimizer`: an `optimizer` section (the sweep's `train.optimizer`); None =
  `classify.default_optimizer(lr, steps)`.

  Returns:
    (probabilities per eval set, {"final_train_loss", "trainable_params"}).
  """
  model = lora_classifier(rung, targets=targets, rank=rank, alpha=alpha, seed=seed)
  graphdef, trainable, frozen = nnx.split(model, TRAINABLE, ...)
  params, extra = classify.fit_classifier(
    graphdef, trainable, frozen, train, loss, steps=steps, batch_size=batch_size, seed=seed,
    optimizer=optimizer or classify.default_optimizer(lr, steps), loss_kwargs=loss_kwargs, desc="lora")
  return [classify.predict(graphdef, params, d) for d in evals], extra
