"""The RL run's first phase: SFT of the policy on worked solutions, through the SFT loop (`train.loop`).

The RL config's `sft` section (`configs/common.py:sft_phase`) names steps, batch, sequence length and the
phase's `optimizer`; the model,
tokenizer, task, seed and mesh come from the RL config, so the SFT'd model is exactly the RL policy's
architecture. The phase runs in `WORKDIR/sft` (or `sft.workdir`, to share one SFT model between runs):
it is the SFT loop, so it resumes, and a finished one is just reloaded. The folder is an `etils.epath`
path, so `sft.workdir` may be a `gs://` folder shared by several runs.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
from etils import epath

from w2s_jax.data.limits import LengthLimitError
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import train
from w2s_jax.train.tasks import sft_setup


def sft_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The SFT loop's config for the RL config's `sft` section."""
  s = config.sft
  c = train_defaults(total_steps=int(s.total_steps), batch_size=int(s.batch_size), optimizer=s.optimizer,
                     seed=int(config.seed))
  c.task = "sft"
  c.log_every_steps = int(s.get("log_every_steps", 10))
  c.eval_every_steps = int(s.total_steps)
  c.checkpoint_every_steps = int(s.get("checkpoint_every_steps", s.total_steps))
  c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
  c.sharding = config.sharding
  # Unset shortcuts (model.dtype / model.attention = None) are left out, so a shared SFT folder's config
  # stays what it was before they were declared; `lora` too (the phase trains the base; LoRA is the RL
  # policy's).
  c.model = ml_collections.ConfigDict(
    {k: v for k, v in config.model.to_dict().items() if v is not None and k != "lora"})
  c.data = ml_collections.ConfigDict(dict(
    corpus=config.data.task, tokenizer=config.data.tokenizer, seq_len=int(s.seq_len), overlong="drop",
    train_size=int(config.data.train_size), eval_size=int(s.get("eval_size", 64)),
    seed=int(config.data.seed), data_dir="", eval_batches=int(s.get("eval_batches", 1)),
  ))
  # Only when set, so a shared SFT folder's config stays the same.
  for key in ("task_options", "answer_format", "chat_template"):
    if config.data.get(key):
      c.data[key] = config.data[key]
  c.loss = ml_collections.ConfigDict(dict(name="sft", reduction="token-mean", z_loss=0.0,
                                               label_smoothing=0.0))
  return c


def sft_workdir(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> epath.Path:
  """Where the SFT phase runs: `sft.workdir` if set, else `WORKDIR/sft` (local folders or URIs)."""
  return epath.Path(config.sft.workdir) if config.sft.get("workdir") else epath.Path(workdir) / "sft"


def run_sft(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> tuple[Any, dict[str, Any]]:
  """Runs (or resumes, or reloads) the SFT phase.

  Raises:
    ValueError: if the SFT folder holds a run of a different SFT config (a shared `sft.workdir` must
      always be used with the same settings).

  Returns:
    (params, summary): the SFT'd policy's params (an `nnx.State` of the Transformer) and the SFT
    loop's summary (`final_step`, `last`, `eval`).
  """

  cfg = sft_config(config)
  folder = sft_workdir(config, workdir)
  saved = folder / "config.json"
  if saved.exists():
    old, new = json.loads(saved.read_text()), json.loads(cfg.to_json_best_effort())
    if old != new:
      diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
      raise ValueError(
        f"{folder} holds an SFT run with a different config (keys {diff}); use a fresh sft.workdir "
        "or the same sft/model/data settings"
      )

  try:
    setup = sft_setup(cfg)
  except LengthLimitError as e:  # the RL config sets the SFT phase's row length as sft.seq_len
    raise e.renamed("sft.seq_len") from None
  summary = train(cfg, folder, setup)
  return summary["state"].params, {k: summary.get(k) for k in ("final_step", "last", "eval")}
