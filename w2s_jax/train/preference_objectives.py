"""Preference objectives: run the model on chosen/rejected pairs and feed `losses.preference`.

Each factory returns `objective(model, batch, rng) -> (loss_sum, weight, metric_sums)` for
`make_train_step`: the weight counts real pairs (or, for KTO, real examples), so the step's division
gives TRL's batch-mean loss and per-pair mean metrics (`rewards/accuracies` is the share of pairs whose
implicit reward margin is positive).

Pair layout (`preference_objective`, `reward_model_objective`): every token array is [2B, L] with the B
chosen sequences (prompt + chosen completion) first and the B rejected ones of the same prompts, in the
same order, after them, so that one forward pass scores both sides. Keys as in `objectives.py`:
`inputs`, `targets`, `loss_mask` (1 on completion target tokens only), `positions`, `segment_ids`;
plus `ref_logps` [2B], the summed completion log-probs under the reference model over the same masks
(`reference_logps` computes them, once per dataset or per batch). A pair whose two rows have no
completion tokens (or, for the reward model, no tokens) is padding and has weight 0.

Splitting: the step's gradient accumulation takes rows j, j+k, j+2k, ... into micro-batch j, which keeps
the chosen-then-rejected layout whenever k divides B. The GSPMD step (`jit` over a sharded batch) sees
the global batch; under `make_shard_map_train_step` every device must hold its own [chosen; rejected]
block, so interleave per-device blocks when building the batch for that form.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.losses import preference as pref
from w2s_jax.models.heads import SequenceClassifier, ValueModel, last_token_index
from w2s_jax.models.shared_prefix import shared_prefix_logits
from w2s_jax.train.step import Batch, Objective

REF_LOGPS = "ref_logps"
# How each pairwise loss reads the policy's sequence log-probs.
PAIRWISE_INPUTS = {
  "dpo": "summed", "sigmoid": "summed", "robust": "summed", "hinge": "summed",
  "ipo": "summed+lengths", "rpo": "summed+nll", "simpo": "averaged", "orpo": "averaged",
}


def sequence_logps(
  logits_BLV: jax.Array, targets_BL: jax.Array, mask_BL: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Summed log-probs of the masked target tokens of each row, and how many tokens were summed.

  logps_B = Σ_t mask_t · log softmax(logits_t)[target_t],  count_B = Σ_t mask_t

  Args:
    logits_BLV: next-token logits [B, L, V] (position t predicts targets_BL[:, t]).
    targets_BL: int target ids [B, L].
    mask_BL: 1 on the completion tokens to score, 0 on prompt and padding [B, L].

  Returns:
    (logps_B, count_B), float32; the mean token log-prob is logps_B / max(count_B, 1).
  """
  logits_BLV = logits_BLV.astype(jnp.float32)
  target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  logp_BL = target_logit_BL - jax.nn.logsumexp(logits_BLV, axis=-1)
  mask_BL = mask_BL.astype(jnp.float32)
  return jnp.sum(logp_BL * mask_BL, axis=-1), jnp.sum(mask_BL, axis=-1)


def batch_logps(model: nnx.Module, batch: Batch, prefix: str = "") -> tuple[jax.Array, jax.Array]:
  """Summed completion log-probs and completion token counts, (logps_N, count_N), of the rows
  `{prefix}inputs`, `{prefix}targets`, `{prefix}loss_mask`, ... [N, L] of a token batch under `model`.

  A pair batch in the shared-prompt form (`preference_shared.share_prompts`: `prompt_*` [B, P], `pair_*`
  [B, 2, ...]) runs each prompt once and gives the same [2B] results, chosen first.
  """
  if not prefix and "prompt_inputs" in batch:
    return _shared_pair_logps(model, batch)
  logits_NLV = model(
    batch[f"{prefix}inputs"], positions_BL=batch[f"{prefix}positions"],
    segment_ids_BL=batch[f"{prefix}segment_ids"],
  )
  return sequence_logps(logits_NLV, batch[f"{prefix}targets"], batch[f"{prefix}loss_mask"])


def _shared_pair_logps(model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """`batch_logps` of a shared-prompt pair batch: (logps_2B, count_2B), chosen rows first."""
  last_BV, pair_B2CV = shared_prefix_logits(
    model, batch["prompt_inputs"], batch["pair_inputs"], prompt_positions_NP=batch["prompt_positions"],
    prompt_segment_ids_NP=batch["prompt_segment_ids"], cont_positions_NGC=batch["pair_positions"],
    cont_segment_ids_NGC=batch["pair_segment_ids"], last_prompt_index_N=batch["prompt_last"])
  B, _, C, V = pair_B2CV.shape
  logits_B2LV = jnp.concatenate([jnp.broadcast_to(last_BV[:, None, None], (B, 2, 1, V)), pair_B2CV], axis=2)
  logps_B2, count_B2 = sequence_logps(logits_B2LV, batch["pair_targets"], batch["pair_loss_mask"])
  return logps_B2.T.reshape(-1), count_B2.T.reshape(-1)


def reference_logps(model: nnx.Module, batch: Batch) -> jax.Array:
  """Summed completion log-probs [N] of a token batch under the frozen reference model.

  Jit it once (e.g. `jax.jit(lambda p, b: reference_logps(nnx.merge(graphdef, p), b))`) and store the
  result as `batch["ref_logps"]` (and, for KTO's KL rows, `batch["ref_kl_logps"]` from the `kl_` rows).
  """
  return jax.lax.stop_gradient(batch_logps(model, batch)[0])


def _halves(x_2B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[2B, ...] -> (chosen [B, ...], rejected [B, ...])."""
  if x_2B.shape[0] % 2:
    raise ValueError(f"a pair batch needs an even number of rows (chosen first), got {x_2B.shape[0]}")
  half = x_2B.shape[0] // 2
  return x_2B[:half], x_2B[half:]


def _sums(loss_B: jax.Array, metrics: dict[str, jax.Array], valid_B: jax.Array):
  """(loss_sum, weight, metric_sums) over the valid rows."""
  valid_B = valid_B.astype(jnp.float32)
  metric_sums = {k: jnp.sum(v.astype(jnp.float32) * valid_B) for k, v in metrics.items()}
  return jnp.sum(loss_B * valid_B), jnp.sum(valid_B), metric_sums


def preference_objective(loss: str = "dpo", **loss_kwargs) -> Objective:
  """DPO-family objective on a [2B, L] chosen-then-rejected batch (see the module docstring).

  | loss                                | inputs it gets                                             |
  |-------------------------------------|------------------------------------------------------------|
  | `dpo`/`sigmoid`, `robust`, `hinge`  | summed policy and reference (`ref_logps`) log-probs        |
  | `ipo`                               | the same plus completion lengths (TRL's per-token average) |
  | `rpo`                               | DPO inputs plus each chosen completion's token-mean NLL    |
  | `simpo`, `orpo`                     | per-token average policy log-probs (no reference needed)   |

  ORPO's NLL term is each chosen completion's token-mean NLL (TRL averages over all chosen tokens of
  the batch: equal when the chosen completions have equal lengths); so is RPO's.

  Args:
    loss: a `PREFERENCE_LOSSES` name other than `kto` (see `kto_objective`) and `bradley_terry` (see
      `reward_model_objective`).
    **loss_kwargs: the loss's keyword arguments (`beta`, `label_smoothing`, `gamma`, `rpo_alpha`, ...).

  Returns:
    The objective. Metrics: the loss's (`rewards/chosen`, `rewards/rejected`, `rewards/margins`,
    `rewards/accuracies`, ...) and `logps/chosen`, `logps/rejected` (summed policy log-probs), all
    per-pair means after the step's division.
  """
  if loss not in PAIRWISE_INPUTS:
    hint = {"kto": " (use kto_objective)", "bradley_terry": " (use reward_model_objective)"}.get(loss, "")
    raise ValueError(
      f"unknown pairwise preference loss {loss!r}{hint}; choose one of {sorted(PAIRWISE_INPUTS)}"
    )
  loss_fn, kind = pref.PREFERENCE_LOSSES[loss], PAIRWISE_INPUTS[loss]
  try:  # fail when the config is built, not at the first traced step
    inspect.signature(loss_fn).bind_partial(**loss_kwargs)
  except TypeError as e:
    raise TypeError(f"preference loss {loss!r}: {e}") from None

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    logps_2B, count_2B = batch_logps(model, batch)
    (pc_B, pr_B), (nc_B, nr_B) = _halves(logps_2B), _halves(count_2B)
    if kind == "averaged":
      loss_B, metrics = loss_fn(pc_B / jnp.maximum(nc_B, 1.0), pr_B / jnp.maximum(nr_B, 1.0), **loss_kwargs)
    else:
      rc_B, rr_B = _halves(batch[REF_LOGPS].astype(jnp.float32))
      args, extra = [pc_B, pr_B, rc_B, rr_B], {}
      if kind == "summed+lengths":
        extra = {"chosen_lengths_B": nc_B, "rejected_lengths_B": nr_B}
      elif kind == "summed+nll":
        args.append(-pc_B / jnp.maximum(nc_B, 1.0))  # token-mean NLL of each chosen completion
      loss_B, metrics = loss_fn(*args, **extra, **loss_kwargs)
    metrics["logps/chosen"] = jax.lax.stop_gradient(pc_B)
    metrics["logps/rejected"] = jax.lax.stop_gradient(pr_B)
    return _sums(loss_B, metrics, (nc_B + nr_B) > 0)

  return objective


def kto_objective(
  *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> Objective:
  """KTO objective on unpaired examples, with TRL's KL reference point from mismatched completions.

  Batch: token arrays [N, L] as in the module docstring, `ref_logps` [N], and `desirable` [N] (bool;
  when absent the batch is a pair batch and its first half is desirable, TRL's unpairing). Optional
  KL rows `kl_inputs`, `kl_targets`, `kl_loss_mask`, `kl_positions`, `kl_segment_ids` [M, L] with
  `ref_kl_logps` [M]: prompts paired with another example's completion (TRL shifts completions by one
  within the batch). They run in the same forward pass; z0 = max(0, mean over their rows of
  log π − log π_ref), without gradient. Without KL rows z0 = 0 (TRL's `calculate_KL=False`). Under
  gradient accumulation, z0 is estimated per micro-batch, as TRL does per device step.

  Args:
    beta: β.
    desirable_weight: λ_D.
    undesirable_weight: λ_U.

  Returns:
    The objective; its weight counts the examples, so the loss is TRL's mean over the batch. Metrics:
    `kto_loss`'s sums and counts, each divided by the number of examples (divide `rewards/chosen_sum` by
    `count/chosen` for the mean reward of desirable examples), and `kl` = z0.
  """

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    n = batch["inputs"].shape[0]
    if "kl_inputs" in batch:
      keys = ("inputs", "targets", "loss_mask", "positions", "segment_ids")
      both = {k: jnp.concatenate([batch[k], batch[f"kl_{k}"]]) for k in keys}
      logps_N, count_N = batch_logps(model, both)
      kl_logps_M, kl_count_M = logps_N[n:], count_N[n:]
      logps_N, count_N = logps_N[:n], count_N[:n]
      kl_valid_M = (kl_count_M > 0).astype(jnp.float32)
      kl_sum = jnp.sum((kl_logps_M - batch["ref_kl_logps"].astype(jnp.float32)) * kl_valid_M)
      kl = jax.lax.stop_gradient(kl_sum / jnp.maximum(jnp.sum(kl_valid_M), 1.0))
    else:
      logps_N, count_N = batch_logps(model, batch)
      kl = jnp.zeros((), jnp.float32)
    desirable_N = batch.get("desirable")
    if desirable_N is None:
      desirable_N = jnp.arange(n) < n // 2
    loss_N, metrics = pref.kto_loss(
      logps_N, batch[REF_LOGPS], desirable_N, kl, beta=beta,
      desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
    )
    return _sums(loss_N, metrics, count_N > 0)

  return objective


def sequence_scores(model: nnx.Module, batch: Batch) -> jax.Array:
  """Scalar score [N] of each row: a `SequenceClassifier(cfg, 1)`'s logit, or a `ValueModel`'s value,
  both read at the row's last token with a nonzero segment id."""
  tokens_NL, segment_ids_NL = batch["inputs"], batch["segment_ids"]
  out = model(tokens_NL, positions_BL=batch["positions"], segment_ids_BL=segment_ids_NL)
  if isinstance(model, ValueModel):
    last_N = last_token_index(segment_ids_NL)
    return jnp.take_along_axis(out, last_N[:, None], axis=1)[:, 0]
  if not isinstance(model, SequenceClassifier) or out.shape[-1] != 1:
    raise ValueError(
      f"a reward model must be SequenceClassifier(cfg, 1) or ValueModel, got {type(model).__name__} "
      f"with output shape {out.shape}"
    )
  return out[:, 0]


def reward_model_objective(*, center_rewards_coefficient: float | None = None) -> Objective:
  """Bradley–Terry reward-model objective on a [2B, L] chosen-then-rejected batch.

  The model scores each row with `sequence_scores`; the loss is `bradley_terry_loss` with the batch's
  optional per-pair `margin` [B]. `targets` and `loss_mask` are not needed; a pair is real when both
  rows have a token with a nonzero segment id.

  Args:
    center_rewards_coefficient: TRL's coefficient of the mean (r_w + r_l)² penalty, or None.

  Returns:
    The objective. Metrics: `accuracy` (pairwise: the share of pairs scored chosen > rejected),
    `margin` and `mean_reward`, per-pair means after the step's division.
  """

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    chosen_B, rejected_B = _halves(sequence_scores(model, batch))
    real_c_B, real_r_B = _halves(jnp.any(batch["segment_ids"] != 0, axis=-1))
    loss_B, metrics = pref.bradley_terry_loss(
      chosen_B, rejected_B, margin_B=batch.get("margin"),
      center_rewards_coefficient=center_rewards_coefficient,
    )
    return _sums(loss_B, metrics, real_c_B & real_r_B)

  return objective


@dataclasses.dataclass(frozen=True)
class PreferenceObjective:
  """A `PREFERENCE_OBJECTIVES` entry: the objective factory and what a task must build for it.

  Call it with the loss's keyword arguments to get the objective (`PREFERENCE_OBJECTIVES["ipo"](beta=0.5)`).

  Attributes:
    name: the config name (`loss.name`).
    make: `make(**loss_kwargs) -> Objective`.
    reference: its batches carry the frozen reference model's summed log-probs (`ref_logps`).
    train_data: "pairs" (chosen-then-rejected [2B, L] batches) or "unpaired" (KTO's examples with
      `desirable` and the mismatched KL rows).
    head: "lm" (the decoder's token log-probs) or "reward" (a scalar head on the start decoder's backbone:
      `SequenceClassifier(cfg, 1)` or `ValueModel`, the task's `model.head`).
    accuracy: the metric that is the held-out reward accuracy, or None when it is computed from the
      summed-log-prob margin against `ref_logps` on pair batches.
  """

  name: str
  make: Callable[..., Objective]
  reference: bool = True
  train_data: str = "pairs"
  head: str = "lm"
  accuracy: str | None = "rewards/accuracies"

  def __call__(self, **loss_kwargs: Any) -> Objective:
    return self.make(**loss_kwargs)


def _pairwise(name: str) -> PreferenceObjective:
  # the "averaged" losses (SimPO, ORPO) are reference-free
  return PreferenceObjective(name, functools.partial(preference_objective, name),
                             reference=PAIRWISE_INPUTS[name] != "averaged")


# Objectives by the loss names users know, e.g. `PREFERENCE_OBJECTIVES["ipo"](beta=0.5)`.
PREFERENCE_OBJECTIVES: dict[str, PreferenceObjective] = {
  **{name: _pairwise(name) for name in PAIRWISE_INPUTS},
  "kto": PreferenceObjective("kto", kto_objective, train_data="unpaired", accuracy=None),
  "reward_model": PreferenceObjective("reward_model", reward_model_objective, reference=False, head="reward",
                                      accuracy="accuracy"),
}
