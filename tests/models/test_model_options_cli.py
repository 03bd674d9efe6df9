"""`--config.model.dtype` / `--config.model.attention` from the command line reach the model, and an unset
shortcut leaves a sub-run's SFT config as it was before the keys were declared (SFT, RL, preference)."""

from pathlib import Path

import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from w2s_jax.models import Transformer, from_section
from w2s_jax.rl.sft_init import sft_config
from w2s_jax.train import pretrain
from w2s_jax.train.preference_tasks import records_key, sft_start_config, start_model
from w2s_jax.train.tasks import sft_setup

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _parse(config: str, *overrides: str):
  """The config as `w2s_jax.main` parses it (absl `DEFINE_config_file`, locked), with `overrides`."""
  argv = ["w2s-jax", f"--config={CONFIGS / config}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


CLI = ("--config.model.dtype=bfloat16", "--config.model.attention=dot_product")


def test_sft_cli_override_reaches_the_model():
  cfg = _parse("sft_tiny.py:smoke", *CLI)
  model = nnx.eval_shape(lambda: sft_setup(cfg).make_model(nnx.Rngs(0)))
  assert isinstance(model, Transformer)
  got = (model.cfg.dtype, model.cfg.param_dtype, model.cfg.attention)
  assert got == ("bfloat16", "float32", "dot_product")
  default = _parse("sft_tiny.py:smoke")
  assert (default.model.dtype, default.model.attention) == (None, None)
  assert (from_section(default.model).dtype, from_section(default.model).attention) == ("float32", "einsum")


@pytest.mark.parametrize("config", ["grpo_tiny.py:smoke", "ppo_tiny.py:smoke"])
def test_rl_cli_override_reaches_the_policy_and_its_sft_phase(config):
  cfg = _parse(config, *CLI)
  assert (from_section(cfg.model).dtype, from_section(cfg.model).attention) == ("bfloat16", "dot_product")
  sub = sft_config(cfg).model  # the SFT start is trained with the same compute choices
  assert (sub.dtype, sub.attention) == ("bfloat16", "dot_product")
  assert (from_section(sub).dtype, from_section(sub).attention) == ("bfloat16", "dot_product")


def test_unset_shortcuts_stay_out_of_the_sft_sub_run_config():
  """run_sft reuses a folder only when its saved config is identical: unset (None) shortcuts must not
  appear, so folders written before `model.dtype`/`model.attention` were declared stay reusable."""
  sub = sft_config(_parse("grpo_tiny.py:smoke")).model.to_dict()
  assert sub == {"preset": "tiny", "vocab_size": 512, "overrides": {"max_seq_len": 512}}


def test_preference_cli_override_reaches_the_start_model_and_its_sft():
  cfg = _parse("dpo_tiny.py:smoke", *CLI, "--config.model.remat=block", "--config.model.lora.rank=4")
  model_cfg, _, _ = start_model(cfg)  # "scratch": the trained model and the reference are built from it
  assert (model_cfg.dtype, model_cfg.param_dtype, model_cfg.attention, model_cfg.remat) == (
    "bfloat16", "float32", "dot_product", "block")
  assert cfg.model.lora.to_dict() == {"rank": 4, "alpha": 16.0, "targets": "q,v"}
  sub = sft_start_config(_parse("dpo_tiny.py", *CLI, "--config.model.lora.rank=4")).model
  assert (sub.dtype, sub.attention) == ("bfloat16", "dot_product") and "lora" not in sub
  assert (from_section(sub).dtype, from_section(sub).attention) == ("bfloat16", "dot_product")


def test_unset_shortcuts_leave_the_preference_cache_folders_as_they_were():
  cfg = _parse("dpo_tiny.py")
  # The SFT start's folder is named by its config's hash: the same as the one built before the
  # shortcuts were declared and before `model.sft.steps` / `lr` became `total_steps` / `optimizer`.
  before = pretrain.pretrain_config(
    "tiny", corpus="chain_sum", tokenizer="bytes", vocab_size=512, seq_len=256, steps=1500, batch_size=16,
    lr=3e-3, seed=0, mesh={"data": -1, "fsdp": 1, "tensor": 1},
    corpus_options={"train_size": 5000, "eval_size": 64, "seed": 0, "overlong": "drop"})
  before.model.overrides.update({"max_seq_len": 512})
  assert pretrain.config_hash(sft_start_config(cfg)) == pretrain.config_hash(before)
  # The preference records' folder: unset shortcuts and the adapters (which never change the sampled
  # start model) stay out of its key; a set dtype changes the start model, so it names a new folder.
  assert set(records_key(cfg)["model"]) == {"preset", "vocab_size", "overrides", "init", "head", "sft"}
  assert records_key(_parse("dpo_tiny.py", "--config.model.lora.rank=4")) == records_key(cfg)
  assert records_key(_parse("dpo_tiny.py", *CLI))["model"]["dtype"] == "bfloat16"
