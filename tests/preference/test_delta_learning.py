"""Delta learning: the experiment's pairs on hand-made solutions, and its config's keys (the run itself is
minutes on CPU: `python experiments/delta_learning.py --config=configs/delta_learning.py:smoke ...`)."""

import importlib.util

import pytest

from tests.helpers import ROOT, load_config
from w2s_jax.data import reasoning


def _experiment():
  spec = importlib.util.spec_from_file_location("delta_learning", ROOT / "experiments" / "delta_learning.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_delta_pairs_weak_chosen_weaker_rejected():
  problems = reasoning.generate("chain_sum", "train", 4, seed=9)
  weak = [problems[0].solution, "Answer: 1", "same", ""]
  weaker = ["Answer: -1", problems[1].solution, "same", "x"]
  pairs, stats = _experiment().delta_pairs(problems, weak, weaker)
  # No correctness filter: the weak side is chosen even when the weaker one is right (pair 2).
  assert [(p["chosen"], p["rejected"]) for p in pairs] == [(weak[0], weaker[0]), (weak[1], weaker[1])]
  assert [p["prompt"] for p in pairs] == [f"Question: {q.prompt}\nSolution:\n" for q in problems[:2]]
  assert stats == {"pairs": 2, "skipped": 2, "chosen_correct": 0.5, "rejected_correct": 0.5}


@pytest.mark.parametrize("arg", ["smoke", None])
def test_delta_learning_config(arg):
  c = load_config("delta_learning", arg)
  assert c.total_steps > 0 and c.checkpoint_every_steps > 0 and isinstance(c.seed, int)
  steps = [c.models[name].steps for name in ("weaker", "weak", "student")]
  assert steps == sorted(steps) and len(set(steps)) == 3  # weaker < weak < student
