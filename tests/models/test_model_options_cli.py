"""`--config.model.dtype` / `--config.model.attention` from the command line reach the model, and an unset
shortcut leaves a sub-run's SFT config as it was before the keys were declared."""

from pathlib import Path

import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from w2s_jax.models import Transformer, from_section
from w2s_jax.rl.sft_init import sft_config
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
