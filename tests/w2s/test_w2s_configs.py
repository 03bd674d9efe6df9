"""The W2S experiment configs that build on the quickstart change only what they say they change."""

from w2s_jax.config_files import load_config
from w2s_jax.w2s import rungs


def test_gap_config_is_the_quickstart_with_weak_rung_at_block_4():
  quick, gap = load_config("quickstart").to_dict(), load_config("w2s_smollm2_gap").to_dict()
  assert gap["ladder"].pop("sizes") == ("gguf:smollm2-135m@4", "gguf:smollm2-135m@16")
  quick["ladder"].pop("sizes")
  assert gap == quick
  rungs.check_names(["gguf:smollm2-135m@4", "gguf:smollm2-135m@16"])  # both depths exist (1..30)


def test_gap_config_smoke_is_the_quickstart_smoke():
  assert load_config("w2s_smollm2_gap", "smoke").to_dict() == load_config("quickstart", "smoke").to_dict()
