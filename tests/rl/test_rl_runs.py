"""Every RL config's smoke run end to end (one shared SFT phase), exact resume, and the entry point."""

import json

import numpy as np
import pytest

from tests.helpers import load_config, run_main
from w2s_jax.rl.loop import train_rl

CONFIGS = ["grpo_tiny", "rloo_tiny", "ppo_tiny", "dapo_tiny", "topr_tiny", "rft_tiny"]


@pytest.fixture(scope="module")
def sft_dir(rl_smoke_sft):
  return rl_smoke_sft  # the smoke SFT phase, trained once per pytest run (tests/conftest.py)


def _config(name, sft_dir, **overrides):
  c = load_config(name, "smoke")
  c.mesh.data = 1  # one device: the tests' 8 simulated CPU devices would only slow a tiny model
  c.sft.workdir = str(sft_dir)
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def _records(workdir, name="metrics.jsonl"):
  return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def grpo_run(sft_dir, tmp_path_factory):
  """The grpo_tiny smoke through `main` in this process (tests/helpers.run_main): the run the other tests
  read, and the entry point's RL dispatch and summary line (`test_entry_point_command`)."""
  workdir = tmp_path_factory.mktemp("grpo")
  out = run_main(["--config=configs/grpo_tiny.py:smoke", f"--workdir={workdir}",
                  f"--config.sft.workdir={sft_dir}", "--config.mesh.data=1"])
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, json.loads(out.stdout.strip().splitlines()[-1])


def _check_run(workdir, summary, total):
  records = _records(workdir)
  assert [r["step"] for r in records] == list(range(1, total + 1))
  assert all(np.isfinite(r["loss"]) for r in records)
  evals = _records(workdir, "eval.jsonl")
  assert [e["step"] for e in evals] == [0, total]
  for e in evals:
    assert 0 <= e["pass@1"] <= e["pass@2"] <= e["pass@4"] <= 1 and "maj@4" in e
  config = json.loads((workdir / "config.json").read_text())
  assert config["task"] == "rl" and config["total_steps"] == total
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert total in [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert summary["final_step"] == total


def test_grpo_smoke_runs_and_uses_kl(grpo_run):
  workdir, summary = grpo_run
  _check_run(workdir, summary, 3)
  records = _records(workdir)
  assert all(r["updates"] == 2 and "kl_ref" in r and r["trained_rows"] == 16 for r in records)
  assert any(r["kl_ref"] > 0 for r in records[1:])  # the policy moved away from the SFT reference


@pytest.mark.parametrize("name", CONFIGS[1:])
def test_every_rl_config_smoke_runs(name, sft_dir, tmp_path):
  c = _config(name, sft_dir)
  if name in ("dapo_tiny", "rft_tiny"):
    # The smoke SFT model is rarely right; a format reward makes groups differ so DAPO keeps some.
    c.reward.format_coef = 0.5
    c.dynamic_sampling.metric = "reward"
  summary = train_rl(c, tmp_path)
  _check_run(tmp_path, summary, 3)
  records = _records(tmp_path)
  if name == "ppo_tiny":
    assert all("value_loss" in r and r["updates"] == 4 for r in records)  # 2 epochs × 2 minibatches
  if name == "dapo_tiny":
    assert all(r["groups_kept_frac"] <= 1 and 1 <= r["sample_rounds"] <= 3 for r in records)
  if name == "rft_tiny":
    # RFT trains only on verified-correct samples (possibly none from a 60-step SFT model).
    assert all(r["trained_rows"] <= 16 for r in records)


def test_sft_folder_of_another_config_is_refused(sft_dir, grpo_run, tmp_path):
  with pytest.raises(ValueError, match="different config"):
    train_rl(_config("grpo_tiny", sft_dir, **{"sft.optimizer.lr": 1e-3}), tmp_path)


def test_bad_config_fails_before_training(tmp_path):
  with pytest.raises(ValueError, match="advantage"):
    train_rl(_config("grpo_tiny", tmp_path / "sft", **{"advantage.name": "grpoo"}), tmp_path)
  with pytest.raises(ValueError, match="minibatch_size"):
    train_rl(_config("grpo_tiny", tmp_path / "sft", **{"train.minibatch_size": 5}), tmp_path)
  assert not (tmp_path / "sft").exists()


def test_grpo_learns_a_verifiable_reward(sft_dir, tmp_path):
  """The loop learns: rewarding only the format (an `Answer:` line, then the stop token), GRPO lifts the
  share of well-formed completions of the smoke SFT model from ~0.3 to near 1 within 8 iterations."""
  c = _config("grpo_tiny", sft_dir, total_steps=8, checkpoint_every_steps=8, **{
    "reward.format_coef": 1.0, "reward.correct_coef": 0.0, "optimizer.lr": 1e-3,
    "rollout.prompts_per_step": 8, "eval.samples": 0})
  train_rl(c, tmp_path)
  rates = [r["format_rate"] for r in _records(tmp_path)]
  assert np.mean(rates[-3:]) > rates[0] + 0.3, rates


def test_resume_after_interruption_gives_the_same_metrics(grpo_run, sft_dir, tmp_path):
  full_dir, _ = grpo_run
  train_rl(_config("grpo_tiny", sft_dir, total_steps=2), tmp_path)  # "killed" after iteration 2
  summary = train_rl(_config("grpo_tiny", sft_dir), tmp_path)  # the same command again: resumes
  assert summary["start_step"] == 2
  drop = lambda r: {k: v for k, v in r.items() if not k.startswith("eval_")}
  assert [drop(r) for r in _records(tmp_path)] == [drop(r) for r in _records(full_dir)]
  assert _records(tmp_path, "eval.jsonl")[0] == _records(full_dir, "eval.jsonl")[0]
  assert _records(tmp_path, "eval.jsonl")[-1] == _records(full_dir, "eval.jsonl")[-1]


def test_entry_point_command(grpo_run):
  # `main` in this process (the grpo_run fixture): its RL dispatch and the summary line it prints.
  workdir, summary = grpo_run
  assert summary["final_step"] == 3 and "pass@1" in summary["eval"] and "pass@4" in summary["eval_initial"]
  assert [r["step"] for r in _records(workdir)] == [1, 2, 3]
