"""Every RL config file loads and validates; GSPO, CISPO and Dr. GRPO carry their papers' settings and their
smoke runs go end to end (one shared SFT phase, in process)."""

import json

import numpy as np
import pytest

from tests.helpers import load_config
from w2s_jax.config_files import config_names
from w2s_jax.rl.batch import ADVANTAGES
from w2s_jax.rl.loop import validate

NEW_CONFIGS = ["gspo_tiny", "cispo_tiny", "dr_grpo_tiny"]


def _rl_config_names() -> list[str]:
  """Config files whose config is an RL run (`task == "rl"`); found by loading, not by a hand-kept list."""
  names = []
  for name in config_names():
    if load_config(name, "smoke").get("task") == "rl":
      names.append(name)
  return names


RL_CONFIGS = _rl_config_names()


def test_the_rl_configs_are_found():
  expected = {"grpo_tiny", "rloo_tiny", "ppo_tiny", "dapo_tiny", "topr_tiny", "rft_tiny", "grpo_gain",
              *NEW_CONFIGS}
  assert expected <= set(RL_CONFIGS), sorted(expected - set(RL_CONFIGS))


@pytest.mark.parametrize("name", RL_CONFIGS)
def test_every_rl_config_loads_and_validates(name):
  for arg in (None, "smoke"):
    c = load_config(name, arg)
    validate(c)
    assert c.advantage.name in ADVANTAGES
    assert c.total_steps > 0 and c.checkpoint_every_steps > 0 and isinstance(c.seed, int)
  full, smoke = load_config(name), load_config(name, "smoke")
  assert smoke.total_steps <= full.total_steps and smoke.sft.total_steps <= full.sft.total_steps
  with pytest.raises(ValueError, match="unknown config arg"):
    load_config(name, "smok")


def test_the_papers_settings():
  gspo, cispo, dr = (load_config(n) for n in NEW_CONFIGS)
  # GSPO: sequence ratio, clip range (1 - 3e-4, 1 + 4e-4), one term per sequence, group-normalised A.
  assert (gspo.loss.name, gspo.loss.clip_eps, gspo.loss.clip_eps_high) == ("gspo", 3e-4, 4e-4)
  assert (gspo.loss.reduction, gspo.advantage.name, gspo.kl.coef) == ("seq-mean-token-mean", "grpo", 0.0)
  # CISPO: clipped IS weight (no lower bound, cap 5) with stop-grad, token-level normalisation.
  assert (cispo.loss.name, cispo.loss.clip_eps, cispo.loss.clip_eps_high) == ("cispo", 1.0, 4.0)
  assert (cispo.loss.reduction, cispo.advantage.name, cispo.kl.coef) == ("token-mean", "grpo", 0.0)
  # Dr. GRPO: no std normalisation, token sum over a constant normaliser, PPO-clip at the kind's 0.2.
  assert (dr.advantage.name, dr.loss.name, dr.loss.clip_eps) == ("dr_grpo", "ppo", 0.0)
  assert (dr.loss.reduction, dr.kl.coef) == ("seq-mean-token-sum-norm", 0.0)


def test_validate_names_the_bad_key():
  c = load_config("gspo_tiny", "smoke")
  c.train.minibatch_size = 5  # does not divide 4 prompts x 4 samples
  with pytest.raises(ValueError, match="minibatch_size"):
    validate(c)
  c = load_config("dr_grpo_tiny", "smoke")
  c.advantage.name = "drgrpo"
  with pytest.raises(ValueError, match="advantage"):
    validate(c)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, rl_smoke_sft):
  """The three new configs' smoke runs (+ a format reward), sharing one SFT phase (rl_base smoke SFT)."""
  from w2s_jax.rl.loop import train_rl

  sft_dir = rl_smoke_sft  # trained once per pytest run (tests/conftest.py)
  runs = {}
  for name in NEW_CONFIGS:
    c = load_config(name, "smoke")
    c.mesh.data = 1  # one device: the tests' 8 simulated CPU devices would only slow a tiny model
    c.sft.workdir = str(sft_dir)
    # The 60-step smoke SFT model is rarely right: with the correctness reward alone every group is all
    # wrong and every advantage 0. A format reward makes groups differ, so the losses have work to do.
    c.reward.format_coef = 0.5
    workdir = tmp_path_factory.mktemp(name)
    summary = train_rl(c, workdir)
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (workdir / "eval.jsonl").read_text().splitlines()]
    runs[name] = (summary, records, evals, json.loads((workdir / "config.json").read_text()))
  return runs


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_new_config_smoke_runs_end_to_end(name, smoke_runs):
  summary, records, evals, saved = smoke_runs[name]
  assert summary["final_step"] == 3 and saved["loss"]["name"] == load_config(name).loss.name
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    assert np.isfinite(r["loss"]) and np.isfinite(r["pg_loss"])
    assert r["updates"] == 2 and r["trained_rows"] == 16  # 16 rows in minibatches of 8
    assert "kl_ref" not in r  # no KL term in any of the three
  assert any(r["reward_mean"] > 0 for r in records)  # some groups carried a learning signal
  assert [e["step"] for e in evals] == [0, 3]
  for e in evals:
    assert 0 <= e["pass@1"] <= e["pass@2"] <= e["pass@4"] <= 1


def test_gspo_clips_the_sequence_ratio_after_an_update(smoke_runs):
  """GSPO's range is ±4e-4 around 1: the second minibatch of a rollout (after one AdamW step) has its
  sequence ratios pushed out of it, so part of its tokens are clipped; PPO's ±0.2 (Dr. GRPO) clips none."""
  gspo = smoke_runs["gspo_tiny"][1]
  dr = smoke_runs["dr_grpo_tiny"][1]
  assert max(r["clipfrac"] for r in gspo) > 0.05, [r["clipfrac"] for r in gspo]
  assert all(r["clipfrac"] < 0.05 for r in dr), [r["clipfrac"] for r in dr]
