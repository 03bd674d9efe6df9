"""Preference data: pairs from scored completions (hand-made cases), perturbed pairs checked by the task's
scorer, rows in the objectives' layout, the JSONL cache, and bad records named by file, line and field."""

import json

import numpy as np
import pytest

from w2s_jax.data import jsonl, reasoning
from w2s_jax.data import preference_pairs as pp
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.train.preference_tasks import encode_rows


def _combos(pairs):
  return sorted((p["chosen"], p["rejected"]) for p in pairs)


def test_build_pairs_all_combinations_of_distinct_correct_and_wrong():
  completions = ["a", "b", "a", "c", "d", "b"]
  scores = [1.0, 0.0, 1.0, 0.2, 1.0, 0.0]  # a, d correct; b, c wrong (0.2 is partial credit: wrong)
  pairs = pp.build_pairs("p7", "Q", completions, scores, max_pairs=10)
  assert _combos(pairs) == [("a", "b"), ("a", "c"), ("d", "b"), ("d", "c")]
  assert len({p["id"] for p in pairs}) == 4 and all(p["id"].startswith("p7/") for p in pairs)
  by_text = {"a": 1.0, "b": 0.0, "c": 0.2, "d": 1.0}
  for p in pairs:
    assert p["prompt"] == "Q" and p["problem_id"] == "p7"
    assert p["chosen_score"] == by_text[p["chosen"]] and p["rejected_score"] == by_text[p["rejected"]]


def test_build_pairs_cap_uses_every_completion_before_repeating():
  completions = ["c0", "c1", "c2", "w0", "w1"]
  pairs = pp.build_pairs("p", "Q", completions, [1, 1, 1, 0, 0], max_pairs=3, seed=3)
  assert len(pairs) == 3 and len(set(_combos(pairs))) == 3
  assert {p["chosen"] for p in pairs} == {"c0", "c1", "c2"}
  assert {p["rejected"] for p in pairs} == {"w0", "w1"}


@pytest.mark.parametrize("scores", [[1.0, 1.0], [0.0, 0.5]])
def test_build_pairs_needs_both_sides(scores):
  assert pp.build_pairs("p", "Q", ["x", "y"], scores, max_pairs=4) == []


def test_build_pairs_threshold_and_mismatched_lengths():
  pairs = pp.build_pairs("p", "Q", ["x", "y"], [0.5, 0.2], max_pairs=4, correct_at=0.5)
  assert _combos(pairs) == [("x", "y")]
  with pytest.raises(ValueError, match="2 completions but 1 scores"):
    pp.build_pairs("p", "Q", ["x", "y"], [1.0], max_pairs=1)


def test_build_unpaired_labels_distinct_completions():
  out = pp.build_unpaired("p", "Q", ["x", "y", "x", "z"], [1.0, 0.0, 1.0, 0.99])
  assert [(u["completion"], u["label"]) for u in out] == [("x", True), ("y", False), ("z", False)]


def test_sampled_records_score_with_the_task_scorer():
  problems = reasoning.generate("chain_sum", "train", 3, seed=5)
  wrong = str(int(problems[0].answer) + 1)
  completions = [
    [problems[0].solution, f"Answer: {wrong}", "no answer at all", problems[0].solution],
    [problems[1].solution, f"Answer: {problems[1].answer}"],  # both correct: no pair
    ["garbage", "more garbage", " "],  # all wrong: no pair; the empty one is dropped
  ]
  records, stats = pp.sampled_records(problems, completions, max_pairs_per_prompt=8)
  assert stats["empty_completions_dropped"] == 1
  assert _combos(records["pairs"]) == sorted([(problems[0].solution, f"Answer: {wrong}"),
                                              (problems[0].solution, "no answer at all")])
  assert all(p["prompt"] == f"Question: {problems[0].prompt}\nSolution:\n" for p in records["pairs"])
  assert stats["completions"] == 9 and stats["sample_accuracy"] == pytest.approx(4 / 9)
  assert stats["prompts_with_pairs"] == 1 and stats["pairs"] == 2
  labels = [(u["problem_id"], u["label"]) for u in records["unpaired"]]
  p0, p1, p2 = (p.id for p in problems)
  assert labels == [(p0, True), (p0, False), (p0, False), (p1, True), (p1, True), (p2, False), (p2, False)]


@pytest.mark.parametrize("task", ["chain_sum", "gcd"])
def test_perturbed_records_are_scored_right_and_wrong(task):
  problems = reasoning.generate(task, "train", 12, seed=1)
  records, stats = pp.perturbed_records(problems, seed=2)
  assert stats["pairs"] == 12 and stats["skipped"] == 0
  for i, (problem, pair) in enumerate(zip(problems, records["pairs"], strict=True)):
    assert pair["chosen"] == problem.solution
    assert reasoning.score(problem, pair["rejected"]) < 1.0 and pair["rejected"] != pair["chosen"]
    if i % 2 == 0:  # wrong_answer: the same steps, another answer
      assert pair["perturbation"] == "wrong_answer"
      assert pair["rejected"].rsplit("\n", 1)[0] == "\n".join(problem.steps)
      assert reasoning.extract_answer(pair["rejected"]) != problem.answer
    else:  # truncated: a prefix of the steps, no answer line
      assert pair["perturbation"] == "truncated"
      assert "\n".join(problem.steps).startswith(pair["rejected"]) and "Answer:" not in pair["rejected"]
  assert [u["label"] for u in records["unpaired"]] == [True, False] * 12


def test_wrong_answer_never_returns_the_answer():
  rng = __import__("random").Random(0)
  for answer in ["0", "1", "7", "-4", "2526", "1a3f", "ff"]:
    for _ in range(50):
      assert pp.wrong_answer(answer, rng) != answer


def test_encode_rows_layout():
  tok = ByteTokenizer()
  rows, fits = encode_rows(["ab", "abcdef"], ["c", "gh"], tok, seq_len=5)
  a, b, c = (x + tok.offset for x in b"abc")
  np.testing.assert_array_equal(fits, [True, False])
  np.testing.assert_array_equal(rows["inputs"][0], [tok.bos_id, a, b, c, 0])
  np.testing.assert_array_equal(rows["targets"][0], [a, b, c, tok.eos_id, 0])
  np.testing.assert_array_equal(rows["loss_mask"][0], [0, 0, 1, 1, 0])  # "c" and EOS are scored
  np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 1, 0])
  np.testing.assert_array_equal(rows["positions"][0], [0, 1, 2, 3, 0])
  assert not rows["segment_ids"][1].any() and not rows["loss_mask"][1].any()  # too long: an empty row


def test_cached_records_builds_once(tmp_path):
  calls = []

  def build(split):
    calls.append(split)
    pair = {"id": f"{split}-0", "prompt": "Q", "chosen": "good", "rejected": "bad"}
    unpaired = {"id": f"{split}-u0", "prompt": "Q", "completion": "good", "label": True}
    return {"pairs": [pair], "unpaired": [unpaired]}, {"n": 1}

  first, stats = pp.cached_records(tmp_path, ("train", "eval"), build)
  again, stats_again = pp.cached_records(tmp_path, ("train", "eval"), build)
  assert calls == ["train", "eval"]
  assert first == again and stats == stats_again == {"train": {"n": 1}, "eval": {"n": 1}}
  assert again["eval"]["pairs"][0]["chosen"] == "good" and again["train"]["unpaired"][0]["label"] is True


GOOD_PAIR = {"id": "a", "prompt": "Q", "chosen": "good", "rejected": "bad"}
GOOD_UNPAIRED = {"id": "a", "prompt": "Q", "completion": "good", "label": False}


def _write(path, lines):
  path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
  return path


@pytest.mark.parametrize("bad, field, words", [
  ({"id": "b", "prompt": "Q", "chosen": "x"}, "rejected", "missing"),
  ({"id": "b", "prompt": "Q", "chosen": 3, "rejected": "x"}, "chosen", "expected str"),
  ({"id": "b", "prompt": " ", "chosen": "x", "rejected": "y"}, "prompt", "empty"),
  ({"id": "b", "prompt": "Q", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
  ({"id": "a", "prompt": "Q", "chosen": "x", "rejected": "y"}, "id", "duplicate"),
  ("{not json", None, "malformed JSON"),
])
def test_read_pairs_names_file_line_and_field(tmp_path, bad, field, words):
  path = _write(tmp_path / "pairs.jsonl", [GOOD_PAIR, bad])
  with pytest.raises(jsonl.BadRecordError, match=words) as err:
    pp.read_pairs(path)
  assert err.value.line == 2 and err.value.field == field
  assert str(path) in str(err.value) and f"{path}:2" in str(err.value)


@pytest.mark.parametrize("bad, field, words", [
  ({"id": "b", "prompt": "Q", "completion": "x", "label": 1}, "label", "expected bool"),
  ({"id": "b", "prompt": "Q", "completion": "x", "label": "true"}, "label", "expected bool"),
  ({"id": "b", "prompt": "Q", "label": True}, "completion", "missing"),
  ({"id": "b", "prompt": "Q", "completion": "", "label": True}, "completion", "empty"),
  ({"id": "a", "prompt": "Q", "completion": "x", "label": True}, "id", "duplicate"),
  (["a list"], None, "JSON object"),
])
def test_read_unpaired_names_file_line_and_field(tmp_path, bad, field, words):
  path = _write(tmp_path / "kto.jsonl", [GOOD_UNPAIRED, "", bad])
  with pytest.raises(jsonl.BadRecordError, match=words) as err:
    pp.read_unpaired(path)
  assert err.value.line == 3 and err.value.field == field and f"{path}:3" in str(err.value)


def test_written_records_read_back(tmp_path):
  pairs = [GOOD_PAIR, {**GOOD_PAIR, "id": "b", "chosen": "ünïcode ✓"}]
  pp.write_records(tmp_path / "p.jsonl", pairs)
  pp.write_records(tmp_path / "u.jsonl", [GOOD_UNPAIRED])
  assert pp.read_pairs(tmp_path / "p.jsonl") == pairs
  assert pp.read_unpaired(tmp_path / "u.jsonl") == [GOOD_UNPAIRED]
