"""Delta learning: the recipe's pairs on hand-made solutions, its config's keys, its smoke through `main`."""

import json

import pytest

from tests.helpers import load_config, run_main
from w2s_jax.data import reasoning
from w2s_jax.recipes import delta_learning


def test_delta_pairs_weak_chosen_weaker_rejected():
  problems = reasoning.generate("chain_sum", "train", 4, seed=9)
  weak = [problems[0].solution, "Answer: 1", "same", ""]
  weaker = ["Answer: -1", problems[1].solution, "same", "x"]
  pairs, stats = delta_learning.delta_pairs(problems, weak, weaker)
  # No correctness filter: the weak side is chosen even when the weaker one is right (pair 2).
  assert [(p["chosen"], p["rejected"]) for p in pairs] == [(weak[0], weaker[0]), (weak[1], weaker[1])]
  assert [p["prompt"] for p in pairs] == [f"Question: {q.prompt}\nSolution:\n" for q in problems[:2]]
  assert stats == {"pairs": 2, "skipped": 2, "chosen_correct": 0.5, "rejected_correct": 0.5}


@pytest.mark.parametrize("arg", ["smoke", None])
def test_delta_learning_config(arg):
  c = load_config("delta_learning", arg)
  assert c.total_steps > 0 and c.checkpoint_every_steps > 0 and isinstance(c.seed, int)
  steps = [c.models[name].total_steps for name in ("weaker", "weak", "student")]
  assert steps == sorted(steps) and len(set(steps)) == 3  # weaker < weak < student


@pytest.mark.slow
def test_smoke_runs_through_main(tmp_path):
  done = run_main(["--config=configs/delta_learning.py:smoke", f"--workdir={tmp_path / 'run'}"],
                  env={"W2S_JAX_CACHE": str(tmp_path / "cache")})
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert set(results["accuracy"]) == {"weaker", "weak", "student", "student + DPO(weak vs weaker)",
                                      "student + SFT(weak only)"}
  # The policy starts equal to its reference: every held-out DPO margin is 0, so no pair is "right" yet.
  assert results["dpo_start"]["eval_reward_accuracy_start"] == 0.0
  assert "| student + DPO(weak vs weaker) |" in done.stdout
  assert json.loads((tmp_path / "run" / "config.json").read_text())["task"] == "delta_learning"
