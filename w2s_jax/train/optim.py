"""Optimizers and learning-rate schedules by name, all from optax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "adafactor", "sgd")


def make_schedule(
  kind: str, *, peak_lr: float, total_steps: int, warmup_steps: int = 0, end_lr_frac: float = 0.0
) -> optax.Schedule:
  """Linear warmup from 0 to `peak_lr`, then `kind` decay to `end_lr_frac * peak_lr` at `total_steps`."""
  if kind not in SCHEDULES:
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")
  warmup_steps = min(warmup_steps, total_steps)
  decay_steps = max(total_steps - warmup_steps, 1)
  end_lr = end_lr_frac * peak_lr
  if kind == "constant":
    after = optax.constant_schedule(peak_lr)
  elif kind == "cosine":
    after = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_lr_frac)
  else:
    after = optax.linear_schedule(peak_lr, end_lr, decay_steps)
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, peak_lr, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(cfg: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
  """Builds the optimizer described by an `optimizer` config section.

  Args:
    cfg: keys `name` (adamw | adafactor | sgd), `lr`, `schedule`, `warmup_steps`, `end_lr_frac`,
      `weight_decay`, `b1`, `b2`, `eps`, `momentum` (sgd), `clip_norm` (0 disables global-norm clipping).
    total_steps: length of the run, for the schedule.

  Returns:
    An optax transformation: clipping (if any) chained before the optimizer.
  """
  name = cfg["name"]
  lr = make_schedule(
    cfg.get("schedule", "constant"),
    peak_lr=cfg["lr"],
    total_steps=total_steps,
    warmup_steps=cfg.get("warmup_steps", 0),
    end_lr_frac=cfg.get("end_lr_frac", 0.0),
  )
  wd = cfg.get("weight_decay", 0.0)
  if name == "adamw":
    opt = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                      weight_decay=wd)
  elif name == "adafactor":
    opt = optax.adafactor(lr, weight_decay_rate=wd or None)
  elif name == "sgd":
    opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=cfg.get("momentum") or None))
  else:
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
  clip = cfg.get("clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt
