"""W2S answer-verification sets: openai/weak-to-strong format, labels checked by each task's scorer."""

import collections
import random

import pytest

from w2s_jax.data import reasoning, w2s_sets


@pytest.mark.parametrize("task", sorted(w2s_sets.W2S_TASKS))
def test_records_are_in_w2s_format_and_labels_agree_with_the_scorer(task):
  problems = reasoning.generate(task, "w2s_train", 160, seed=0)
  records = w2s_sets.make_records(problems, seed=0)
  for p, r in zip(problems, records, strict=True):
    assert r["txt"] == f"Q: {p.prompt} A: {r['candidate']}"
    assert r["soft_label"] == [1.0 - r["hard_label"], float(r["hard_label"])]
    # an independent check of the label: reasoning-gym's own scorer on the candidate
    assert (reasoning.score(p, f"Answer: {r['candidate']}") == 1.0) == bool(r["hard_label"]), r
    assert (r["distractor"] == "") == (r["hard_label"] == 1)
  positives = sum(r["hard_label"] for r in records)
  assert 50 <= positives <= 110  # a fair coin over 160 records
  kinds = collections.Counter(r["distractor"] for r in records if not r["hard_label"])
  assert set(kinds) == set(w2s_sets.DISTRACTOR_KINDS), kinds


def test_perturb_stays_near_and_wrong():
  rng = random.Random(0)
  for _ in range(50):
    assert w2s_sets.perturb("10", rng) in {"11", "9", "12", "8", "20", "0", "100", "1"}  # "1": 01 swapped
    assert w2s_sets.perturb("5", rng) in {"6", "4", "7", "3", "15", "50"}
    v = int(w2s_sets.perturb("-37", rng))
    assert v != -37 and v in {-36, -38, -35, -39, -27, -47, -370, -73}


def test_step_values_are_intermediate_results():
  p = reasoning.Problem(id="x", task="chain_sum", prompt="4 + 5 - 2 + 10 =", answer="17",
                        steps=("4 + 5 = 9", "9 - 2 = 7", "7 + 10 = 17"), metadata="{}")
  assert w2s_sets.step_values(p) == ["9", "7"]


def test_other_problem_answers_come_from_the_same_gsm_template():
  problems = reasoning.generate("gsm_symbolic", "w2s_train", 200, seed=0)
  records = w2s_sets.make_records(problems, seed=0)
  groups = collections.defaultdict(list)
  for p in problems:
    groups[w2s_sets._group_key(p)].append(p)
  checked = 0
  for p, r in zip(problems, records, strict=True):
    group = groups[w2s_sets._group_key(p)]
    if r["distractor"] == "other_problem" and len(group) >= 3:  # else any problem's answer is used
      assert r["candidate"] in {o.answer for o in group if o is not p}
      checked += 1
  assert checked >= 10


def test_generate_excludes_given_questions_and_is_deterministic():
  train = w2s_sets.generate("gcd", "train", 100)
  test = w2s_sets.generate("gcd", "test", 50, exclude={r["question"] for r in train})
  assert not {r["question"] for r in train} & {r["question"] for r in test}
  assert w2s_sets.generate("gcd", "train", 100) == train


def test_sweep_splits_share_no_question():
  # The sweep's own split builder: before generate_splits it compared "Q: <question>" with bare questions
  # and excluded nothing (~5 % of chain_sum test questions were train questions).
  import ml_collections

  from w2s_jax.w2s.run import _records

  data = {"task": "chain_sum", "n_train": 600, "n_test": 600, "seed": 0}
  config = ml_collections.ConfigDict({"data": data})
  train, test = _records(config)
  assert len(test) == 600
  assert not {r["question"] for r in train} & {r["question"] for r in test}
