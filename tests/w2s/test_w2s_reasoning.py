"""Weak-to-Strong Reasoning: the selection rules against hand-built inputs, and the smoke run end to end."""

import json

import pytest

from tests.helpers import load_config, run_main
from w2s_jax.data.reasoning import extract_answer, generate
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.recipes.w2s_reasoning import (
  agreement_filter,
  self_consistency_pairs,
  task_splits,
  validate,
  vote_share,
)
from w2s_jax.rl.roles import role_config
from w2s_jax.rl.sft_init import sft_config


def test_agreement_filter_keeps_equal_stated_answers():
  weak = ["3", None, " 5", "7", "", "9", None]
  strong = ["3", None, "5", "8", "", "9 ", "1"]
  assert agreement_filter(weak, strong).tolist() == [0, 2, 5]  # None and "" never agree
  assert agreement_filter([], []).tolist() == []
  with pytest.raises(ValueError, match="2 weak answers but 1 strong"):
    agreement_filter(["1", "2"], ["1"])


def test_vote_share():
  assert vote_share(["4", "4", "5", None]) == ("4", 0.5)
  assert vote_share(["5", "4"]) == ("5", 0.5)  # tie: first seen
  assert vote_share([None, None]) == (None, 0.0)
  assert vote_share([None, "2", None]) == ("2", pytest.approx(1 / 3))


def test_self_consistency_pairs_thresholds_and_sides():
  texts = ["x\nAnswer: 4", "y\nAnswer: 4", "x\nAnswer: 4", "z\nAnswer: 5", "w"]
  answers = ["4", "4", "4", "5", None]
  pairs, info = self_consistency_pairs("p0", "Q", texts, answers, min_share=0.6, max_pairs=10)
  assert info == {"majority": "4", "share": 0.6, "confident": True}
  # Distinct majority texts {x, y} against the one differing stated answer; the unanswered one is out.
  assert sorted((p["chosen"], p["rejected"]) for p in pairs) == [
    ("x\nAnswer: 4", "z\nAnswer: 5"), ("y\nAnswer: 4", "z\nAnswer: 5")]
  assert all(p["prompt"] == "Q" and p["problem_id"] == "p0" for p in pairs)

  with_none, _ = self_consistency_pairs("p0", "Q", texts, answers, min_share=0.6, max_pairs=10,
                                        include_unanswered=True)
  assert sorted((p["chosen"], p["rejected"]) for p in with_none) == [
    ("x\nAnswer: 4", "w"), ("x\nAnswer: 4", "z\nAnswer: 5"),
    ("y\nAnswer: 4", "w"), ("y\nAnswer: 4", "z\nAnswer: 5")]
  capped, _ = self_consistency_pairs("p0", "Q", texts, answers, min_share=0.6, max_pairs=1)
  assert len(capped) == 1

  none, info = self_consistency_pairs("p0", "Q", texts, answers, min_share=0.61, max_pairs=10)
  assert none == [] and info["confident"] is False and info["share"] == 0.6
  unanimous, info = self_consistency_pairs("p1", "Q", ["a", "b"], ["1", "1"], min_share=0.5, max_pairs=10)
  assert unanimous == [] and info["confident"]  # nothing to reject
  with pytest.raises(ValueError, match="min_share"):
    self_consistency_pairs("p0", "Q", texts, answers, min_share=1.5, max_pairs=1)


def test_gcd_config_shares_the_gcd_sft_starts_and_validates():
  c = load_config("w2s_reasoning", "gcd")
  validate(c)
  assert c.data.task == "gcd" and "options" not in c.data
  # run_sft reuses a folder only for an identical SFT config: the weak model must be exactly grpo_gain's
  # SFT phase and the strong start exactly w2sr:gcd's (both built here from those configs, not from ours).
  assert sft_config(role_config(c, "weak")).to_dict() == sft_config(load_config("grpo_gain")).to_dict()
  assert sft_config(role_config(c, "strong")).to_dict() == sft_config(load_config("w2sr", "gcd")).to_dict()
  assert c.weak.sft.workdir == "runs/grpo_gain/sft"
  assert c.strong.sft.workdir == "runs/w2sr_gcd/strong_start"
  assert c.data.eval_size == load_config("grpo_gain").data.eval_size == 128  # the same held-out problems
  assert c.baselines.naive_w2s and c.baselines.ceiling
  with pytest.raises(ValueError, match="unknown config arg 'gsm'"):
    load_config("w2s_reasoning", "gsm")


@pytest.mark.parametrize("key, value, match", [
  ("stage1.sources", "teacher", "stage1.sources"),
  ("stage2.min_share", 1.5, "stage2.min_share"),
  ("stage2.samples", 1, "stage2.samples"),
  ("data.train_size", 0, "data.train_size"),
  ("data.pool_size", 0, "data.pool_size"),
  ("data.max_new_tokens", 400, "strong.model max_seq_len 512 < 536"),  # 136 + 400 tokens > 512
  ("strong.model.vocab_size", 256, "vocab_size"),
])
def test_validate_names_the_bad_field(key, value, match):
  c = load_config("w2s_reasoning", "gcd")
  if key == "data.max_new_tokens":
    c.weak.model.overrides.max_seq_len = 1024  # so the strong model is the first too short
  *path, leaf = key.split(".")
  section = c
  for name in path:
    section = section[name]
  section[leaf] = value
  with pytest.raises(ValueError, match=match):
    validate(c)


def test_validate_needs_gold_without_an_sft_phase():
  c = load_config("w2s_reasoning", None)
  validate(c)
  c.data.gold_size = 0
  with pytest.raises(ValueError, match="data.gold_size"):
    validate(c)
  c = load_config("w2s_reasoning", None)
  c.strong.start_examples = c.data.gold_size + 1
  with pytest.raises(ValueError, match="strong.start_examples"):
    validate(c)


def test_task_splits_follow_the_sft_phase_train_split():
  c = load_config("w2s_reasoning", "gcd").data
  c.train_size, c.gold_size, c.pool_size, c.eval_size = 300, 5, 40, 12
  splits = task_splits(c)
  train = [p.prompt for p in generate("gcd", "train", 300, seed=0)]
  # The test set is exactly the held-out split the SFT phase's runs evaluate on.
  heldout = reasoning_problems("gcd", "eval", size=12, train_size=300, seed=0)
  assert [p.prompt for p in splits["test"]] == [p.prompt for p in heldout]
  assert [p.prompt for p in splits["gold"]] == train[:5]
  pool = [p.prompt for p in splits["pool"]]
  assert len(pool) == len(set(pool)) == 40
  assert not set(pool) & (set(train) | {p.prompt for p in heldout})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("w2s_reasoning")
  out = run_main(["--config=configs/w2s_reasoning.py:smoke", f"--workdir={workdir}"],
                 env={"W2S_JAX_CACHE": str(workdir / "cache")})
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_smoke_runs_every_stage(smoke_run):
  workdir, out = smoke_run
  results = json.loads((workdir / "results.json").read_text())
  assert json.loads(out.stdout.strip().splitlines()[-1])["stage1"] == results["stage1"]
  assert set(results["heldout"]) == {"weak", "strong_start", "stage1", "stage2", "ceiling"}
  for name, m in results["heldout"].items():
    assert m["problems"] == 16, name
    for k in ("pass@1", "maj@2", "greedy_accuracy", "answered"):
      assert 0.0 <= m[k] <= 1.0, (name, k)
  # Smoke trains the strong start exactly as the weak model: identical greedy answers on all 48 items,
  # and the weak's and strong's texts coincide, so each agreed item gives one Stage-I pair.
  s1 = results["stage1"]
  assert s1["pool"] == 48 and s1["agreed"] == 48 and s1["stage1_pairs"] == 48
  assert s1["weak_pool_accuracy"] == s1["strong_start_pool_accuracy"]
  for sub in ("weak", "strong_start", "stage1", "stage2", "ceiling"):
    assert (workdir / sub / "checkpoints").is_dir(), sub


def test_smoke_stage2_pairs_follow_the_rule(smoke_run):
  workdir, _ = smoke_run
  s2 = json.loads((workdir / "stages" / "stage2.json").read_text())
  stats = s2["stats"]
  pairs = s2["records"]["train"]["pairs"] + s2["records"]["eval"]["pairs"]
  assert len(pairs) == stats["train_pairs"] + stats["eval_pairs"] > 0
  assert stats["confident"] >= stats["with_pairs"]
  by_problem = {}
  for p in pairs:
    by_problem.setdefault(p["problem_id"], []).append(p)
    assert p["chosen"] != p["rejected"]
    assert extract_answer(p["chosen"]) is not None
    assert extract_answer(p["chosen"]) != extract_answer(p["rejected"])  # differing answers only
  for ps in by_problem.values():
    assert len({extract_answer(p["chosen"]) for p in ps}) == 1  # one majority answer per question
    assert len(ps) <= 2  # stage2.max_pairs_per_prompt
  train_ids = {p["problem_id"] for p in s2["records"]["train"]["pairs"]}
  assert not train_ids & {p["problem_id"] for p in s2["records"]["eval"]["pairs"]}  # held-out questions
