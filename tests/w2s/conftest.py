"""Runs that several recipe smokes of tests/w2s start from, built once per pytest run (as `rl_smoke_sft`)."""

from pathlib import Path

import pytest

from tests.conftest import built_once


@pytest.fixture(scope="session")
def ladder0_smoke_sft(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """rl_base's smoke SFT phase with the `ladder-0` preset and 20 steps, trained once per pytest run.

  It is both configs/onpolicy_distill.py:smoke's student and configs/w2sr.py:smoke's weak reasoner: with
  `mesh.data=1` their SFT configs are equal, so passing this folder as `student.sft.workdir` /
  `weak.sft.workdir` makes `rl.sft_init.run_sft` reload it instead of training again.
  """
  from w2s_jax.config_files import load_config
  from w2s_jax.rl.roles import role_config
  from w2s_jax.rl.sft_init import run_sft

  def build(folder: Path) -> None:
    config = load_config("onpolicy_distill", "smoke")
    config.mesh.data = 1
    role = role_config(config, "student")
    role.sft.workdir = str(folder)
    run_sft(role, folder.parent)

  return built_once(tmp_path_factory, "ladder0_smoke_sft", build)
