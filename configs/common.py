"""Shared config sections that the configs in this folder build on (not a config itself: no `get_config`).

Load it with `w2s_jax.config_files.load_common()`. Each function returns one section spelled as the README's
"Config keys" table spells it, so a key means the same thing in every config, and every sub-run's optimizer
is written in its config (an `optimizer` section), not chosen in library code.
"""

import ml_collections

from w2s_jax.train.config_lib import distributed_defaults, optimizer_section

# optimizer(lr, warmup_steps=..., schedule="cosine", ...): an `optimizer` section (AdamW).
optimizer = optimizer_section


def mesh() -> ml_collections.ConfigDict:
  """The device mesh: every device on the data axis (`sharding` "dp"; "fsdp", "fsdp_tp" use the others)."""
  return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def loop(
  c: ml_collections.ConfigDict, *, total_steps: int, checkpoint_every_steps: int, keep_checkpoints: int,
  seed: int = 0,
) -> None:
  """Sets a training loop's top-level keys on `c`: seed, steps, checkpoint cadence, mesh, devices, processes.

  `log_every_steps` / `eval_every_steps` are set by the configs whose loop reads them (SFT, preference).
  """
  c.seed = seed
  c.total_steps = total_steps
  c.checkpoint_every_steps = checkpoint_every_steps
  c.keep_checkpoints = keep_checkpoints
  c.max_nonfinite_streak = 5  # consecutive non-finite updates skipped before the run stops
  c.cpu_devices = 0  # >0 sets jax_num_cpu_devices (simulated devices on CPU)
  c.mesh = mesh()
  c.sharding = "dp"  # dp | fsdp | fsdp_tp
  c.distributed = distributed_defaults()


def model(preset: str = "tiny", max_seq_len: int = 512) -> ml_collections.ConfigDict:
  """A `model` section: a preset of the byte-level decoder (vocab 512) with its context length.

  `dtype` (compute dtype, e.g. "bfloat16"; parameters stay float32), `attention` ("einsum",
  "dot_product" or "blocked") and `remat` ("none", "block", "dots_saveable",
  "dots_with_no_batch_dims_saveable") are unset (the preset's) unless given, e.g.
  `--config.model.attention=dot_product`.

  Its `lora` section is off (rank 0: full fine-tuning); `--config.model.lora.rank=8` trains rank-8 adapters
  on `targets` (comma-separated `q k v o gate up down`), scaled by alpha / rank, the base frozen.
  """
  return ml_collections.ConfigDict({
    "preset": preset, "vocab_size": 512,
    "overrides": ml_collections.ConfigDict({"max_seq_len": max_seq_len}),
    "dtype": ml_collections.config_dict.placeholder(str),
    "attention": ml_collections.config_dict.placeholder(str),
    "remat": ml_collections.config_dict.placeholder(str),
    "lora": lora(),
  })


def lora(rank: int = 0, alpha: float = 16.0, targets: str = "q,v") -> ml_collections.ConfigDict:
  """A `model.lora` section (`w2s_jax.models.lora.LoRASpec`): rank 0 = off (full fine-tuning)."""
  return ml_collections.ConfigDict({"rank": rank, "alpha": alpha, "targets": targets})


def sft_phase(
  *, total_steps: int, batch_size: int, seq_len: int, lr: float, warmup_steps: int, workdir: str = "",
) -> ml_collections.ConfigDict:
  """An `sft` sub-run section (`w2s_jax.rl.sft_init.run_sft`): SFT on the task's worked solutions.

  Its `optimizer` is the SFT loop's (AdamW, cosine decay to 10 %, weight decay 0.01, clip 1.0); `workdir`
  "" trains in WORKDIR/sft, a path shares one SFT model between runs (same settings required).
  """
  s = ml_collections.ConfigDict()
  s.total_steps = total_steps
  s.batch_size = batch_size
  s.seq_len = seq_len
  s.workdir = workdir
  s.optimizer = optimizer_section(lr, warmup_steps=warmup_steps)
  return s
