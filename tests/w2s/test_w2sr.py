"""W2SR: the recovered-share arithmetic (incl. RL without gain), the weak-solution records, config
validation, and the smoke config end to end through the entry point."""

import json
import shutil

import numpy as np
import pytest

from tests.helpers import load_config, run_main
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.recipes.w2sr import recovered_share, solution_records, validate
from w2s_jax.rl.loop import prompt_indices
from w2s_jax.rl.rollout import encode_prompts


@pytest.mark.parametrize("start,sft,rl,share", [
  (0.10, 0.30, 0.50, 0.5),  # (0.30 − 0.10) / (0.50 − 0.10)
  (0.20, 0.20, 0.60, 0.0),  # W2SR did no better than the start
  (0.20, 0.10, 0.40, -0.5),  # W2SR hurt
  (0.00, 0.06, 0.04, 1.5),  # W2SR beat RL
  (0.25, 0.75, 0.75, 1.0),
])
def test_recovered_share_hand_values(start, sft, rl, share):
  value, reason = recovered_share(start, sft, rl)
  assert reason is None
  assert value == pytest.approx(share, abs=1e-12)


@pytest.mark.parametrize("rl", [0.30, 0.25])
def test_recovered_share_undefined_when_rl_did_not_improve(rl):
  value, reason = recovered_share(0.30, 0.40, rl)  # rl == start (0 / 0 territory) or rl < start
  assert value is None
  assert "did not improve" in reason and "undefined" in reason


def test_solution_records_keep_all_or_correct_only():
  problems = reasoning.generate("chain_sum", "train", 2, seed=0)
  texts = ["1 + 1 = 2\nAnswer: 2", "  \n", "Answer: 9", "x", "y", "Answer: 5"]  # k = 3 per problem
  correct = np.array([0, 1, 1, 0, 0, 1], np.float32)
  lines, empty = solution_records(problems, texts, correct, 3, correct_only=False)
  records = [json.loads(line) for line in lines]
  assert empty == 1
  assert [r["response"] for r in records] == ["1 + 1 = 2\nAnswer: 2", "Answer: 9", "x", "y", "Answer: 5"]
  p0, p1 = reasoning_prompt(problems[0]), reasoning_prompt(problems[1])
  assert [r["prompt"] for r in records] == [p0, p0, p1, p1, p1]
  assert [r["id"] for r in records] == [f"{problems[0].id}-0", f"{problems[0].id}-2", f"{problems[1].id}-0",
                                        f"{problems[1].id}-1", f"{problems[1].id}-2"]
  assert [r["correct"] for r in records] == [False, True, False, False, True]
  lines, empty = solution_records(problems, texts, correct, 3, correct_only=True)
  assert [json.loads(line)["response"] for line in lines] == ["Answer: 9", "Answer: 5"] and empty == 1


def test_validate_names_the_field():
  c = load_config("w2sr", "smoke")
  c.w2sr.problems = 6  # not a multiple of prompts_per_step = 4
  with pytest.raises(ValueError, match="w2sr.problems"):
    validate(c)
  c = load_config("w2sr", "smoke")
  c.dynamic_sampling.enabled = True
  with pytest.raises(ValueError, match="dynamic_sampling"):
    validate(c)
  c = load_config("w2sr", "smoke")
  c.w2sr.temperature = 0.0
  with pytest.raises(ValueError, match="w2sr.temperature"):
    validate(c)
  with pytest.raises(ValueError, match="unknown config arg"):
    load_config("w2sr", "bogus")


@pytest.mark.slow
def test_smoke_config_via_entry_point(tmp_path, rl_smoke_sft, ladder0_smoke_sft):
  # The smoke's strong start is rl_base's smoke SFT phase: the worker's (tests/conftest.py) is copied in as
  # the recipe's README says, and reloaded. Its weak reasoner is tests/w2s/conftest.py's shared ladder-0 SFT.
  shutil.copytree(rl_smoke_sft, tmp_path / "strong_start")
  out = run_main(["--config=configs/w2sr.py:smoke", f"--workdir={tmp_path}",
                  f"--config.weak.sft.workdir={ladder0_smoke_sft}", "--config.mesh.data=1"])
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["pass@1"] == summary["pass@1"]
  p = results["pass@1"]
  assert set(p) == {"weak", "start", "w2sr", "rl"} and all(0.0 <= v <= 1.0 for v in p.values())
  if p["rl"] > p["start"]:
    assert results["recovered_share"] == pytest.approx((p["w2sr"] - p["start"]) / (p["rl"] - p["start"]))
    assert results["share_reason"] is None
  else:
    assert results["recovered_share"] is None and "did not improve" in results["share_reason"]
  # The weak reasoner's solutions: 8 problems × 4 samples, all kept (correct_only off) but empty ones.
  stats = results["weak_solutions"]
  assert stats["samples"] == 32 and stats["kept"] + stats["empty"] == 32
  records = [json.loads(line) for line in (tmp_path / "weak_solutions.jsonl").read_text().splitlines()]
  assert len(records) == stats["kept"]
  # ... on exactly the problems RL saw: its prompt stream's first 8 prompts (2 iterations of 4).
  config = load_config("w2sr", "smoke")
  train = encode_prompts(reasoning_problems("chain_sum", "train", size=config.data.train_size, seed=0),
                         ByteTokenizer(), config.data.max_prompt_len)
  idx = prompt_indices(0, 8, len(train.problems), config.seed)
  assert {r["prompt"] for r in records} <= {reasoning_prompt(train.problems[i]) for i in idx}
  rl_metrics = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in rl_metrics] == [1, 2] and rl_metrics[-1]["prompt_cursor"] == 8
  # The W2SR SFT ran on those records, from the shared start.
  sft_lines = (tmp_path / "w2sr_sft" / "metrics.jsonl").read_text().splitlines()
  sft_metrics = [json.loads(line) for line in sft_lines]
  assert sft_metrics[-1]["step"] == config.w2sr.sft.total_steps
  assert (tmp_path / "strong_start" / "checkpoints").exists()
  # reloaded, not trained again: its log is the shared run's
  start_log = (tmp_path / "strong_start" / "metrics.jsonl").read_text()
  assert start_log == (rl_smoke_sft / "metrics.jsonl").read_text()
