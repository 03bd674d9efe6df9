"""Objectives: run the model on a batch and feed the arrays to a pure loss.

Each objective factory takes the loss's hyperparameters and returns
`objective(model, batch, rng) -> (loss_sum, weight, metric_sums)` for `make_train_step`.

Batch layout for token objectives (all [B, L], built by `w2s_jax.data.packing`): `inputs` (token ids),
`targets` (the next token of each input), `loss_mask` (1 on trained target tokens), `positions`
(restarting at 0 in every packed segment) and `segment_ids` (0 = padding).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from w2s_jax.losses.aggregation import aggregate
from w2s_jax.losses.prm import prm_loss
from w2s_jax.losses.sft import sft_loss
from w2s_jax.train.step import Batch, Objective


def sft_objective(
  *, reduction: str = "token-mean", z_loss: float = 0.0, label_smoothing: float = 0.0
) -> Objective:
  """Masked next-token cross-entropy on the response tokens (prompts and padding masked out)."""

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    logits_BLV = model(
      batch["inputs"], positions_BL=batch["positions"], segment_ids_BL=batch["segment_ids"]
    )
    mask_BL = batch["loss_mask"]
    loss_BL, aux = sft_loss(
      logits_BLV, batch["targets"], mask_BL, z_loss=z_loss, label_smoothing=label_smoothing
    )
    loss_sum, weight = aggregate(loss_BL, mask_BL, reduction)
    # Metrics share the loss's weight; for token-mean they are per-token means.
    nll_sum, _ = aggregate(aux["nll_BL"], mask_BL, reduction)
    acc_sum, _ = aggregate(aux["correct_BL"], mask_BL, reduction)
    return loss_sum, weight, {"nll": nll_sum, "accuracy": acc_sum}

  return objective


def prm_objective(*, reduction: str = "token-mean") -> Objective:
  """Process reward model training: `prm_loss` of a `ValueModel`'s per-token logits at step ends.

  Batch: `tokens`, `segment_ids` [B, L]; `step_labels` (targets in [0, 1]) and `step_end_mask` (1 at the
  last token of each labelled step) [B, L]. `reduction` averages over labelled steps by default.
  """

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    logits_BL = model(batch["tokens"], segment_ids_BL=batch["segment_ids"])
    mask_BL = batch["step_end_mask"]
    loss_BL, aux = prm_loss(logits_BL, batch["step_labels"], mask_BL)
    loss_sum, weight = aggregate(loss_BL, mask_BL, reduction)
    acc_sum, _ = aggregate(aux["correct_BL"], mask_BL, reduction)
    return loss_sum, weight, {"step_accuracy": acc_sum}

  return objective


OBJECTIVES: dict[str, Callable[..., Objective]] = {"sft": sft_objective, "prm": prm_objective}
