"""W2S answer-verification sets: openai/weak-to-strong format, labels checked by each task's scorer."""

import collections
import random
import re

import pytest

from w2s_jax.data import reasoning, w2s_sets


@pytest.mark.parametrize("task", sorted(w2s_sets.W2S_TASKS))
def test_records_are_in_w2s_format_and_labels_agree_with_the_scorer(task):
  if task in w2s_sets.VARIANTS:
    problems = w2s_sets.variant_problems(task, "w2s_train", 160, pool="w2s", seed=0)
    records = w2s_sets.make_records(problems, seed=0, variant=task)
  else:
    problems = reasoning.generate(task, "w2s_train", 160, seed=0)
    records = w2s_sets.make_records(problems, seed=0)
  assert len(records) == 160
  for p, r in zip(problems, records, strict=True):
    if task in w2s_sets.VARIANTS:
      expression = p.prompt.rsplit(":", 1)[1].strip()  # "... arithmetic problem: 7 - 9 + 4 ="
      assert r["txt"] == f"Question: {expression}\nAnswer: {r['candidate']}"
    else:
      assert r["txt"] == f"Q: {p.prompt} A: {r['candidate']}"
    assert r["soft_label"] == [1.0 - r["hard_label"], float(r["hard_label"])]
    # an independent check of the label: reasoning-gym's own scorer on the candidate
    assert (reasoning.score(p, f"Answer: {r['candidate']}") == 1.0) == bool(r["hard_label"]), r
    assert (r["distractor"] == "") == (r["hard_label"] == 1)
  positives = sum(r["hard_label"] for r in records)
  assert 50 <= positives <= 110  # a fair coin over 160 records
  kinds = collections.Counter(r["distractor"] for r in records if not r["hard_label"])
  expected = set(w2s_sets.DISTRACTOR_KINDS) - ({"wrong_step"} if task == "chain_sum_2x2" else set())
  assert set(kinds) == expected, kinds  # two terms: the only step computes the answer itself


@pytest.mark.parametrize("variant,terms,max_value", [("chain_sum_3x1", 3, 9), ("chain_sum_2x2", 2, 99)])
def test_variants_have_their_difficulty_and_never_share_a_question_with_pretraining(variant, terms,
                                                                                     max_value):
  from w2s_jax.data import corpus

  train, test = w2s_sets.generate_splits(variant, 300, 100, seed=0)
  docs = list(corpus.variant_documents(variant, 300))
  assert len(docs) == 300 and len(train) == 300 and len(test) == 100
  pretrain_questions = {text.split("\n", 1)[0] for _, _, text in docs}
  w2s_questions = {r["txt"].split("\n", 1)[0] for r in train + test}
  assert not pretrain_questions & w2s_questions
  assert not {r["question"] for r in train} & {r["question"] for r in test}
  for _, _, text in docs:  # the answer is the expression's value, computed here independently
    question, body = text.split("\n", 1)
    expression = question.removeprefix("Question: ").removesuffix(" =")
    numbers = [int(t) for t in expression.split()[::2]]
    assert len(numbers) == terms and all(0 <= n <= max_value for n in numbers), expression
    assert body.endswith(f"Answer: {eval(expression)}")  # noqa: S307 (digits, spaces, + and - only)
    assert body.startswith(("Answer:", "Solution:\n"))
  forms = collections.Counter(text.split("\n")[1].split(":")[0] for _, _, text in docs)
  assert forms == {"Solution": 150, "Answer": 150}


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

  data = {"task": "chain_sum", "train_size": 600, "eval_size": 600, "seed": 0}
  config = ml_collections.ConfigDict({"data": data})
  train, test = _records(config)
  assert len(test) == 600
  assert not {r["question"] for r in train} & {r["question"] for r in test}


STRING_TASKS = {  # task -> the distractor kinds its records must use
  "sentence_reordering": {"word_swap"}, "spell_backward": {"char_swap"},
  "word_sorting": {"list_swap", "list_drop"}, "syllogism": {"other_problem"},
  "family_relationships": {"other_problem"}, "leg_counting": {"perturbed", "other_problem"},
  "letter_counting": {"perturbed", "other_problem"}, "countdown": {"op_swap"},
}


def _parts(text: str, kind: str) -> list[str]:
  """Words without trailing punctuation (word_swap), characters, or list elements."""
  if kind == "word_swap":
    return [w.rstrip(".,!?;:\"')") for w in text.split(" ")]
  return list(text) if kind == "char_swap" else text.split(", ")


@pytest.mark.parametrize("task", sorted(STRING_TASKS))
def test_string_answer_sets_have_near_miss_distractors_that_the_scorer_rejects(task):
  train, test = w2s_sets.generate_splits(task, 60, 30, seed=0, candidates=2)
  assert len(train) == 120 and len(test) == 30
  assert not {r["question"] for r in train} & {r["question"] for r in test}
  problems = {p.prompt: p for p in reasoning.generate(task, "w2s_train", 60, seed=0)}
  for r in train:
    p = problems[r["question"]]
    assert r["txt"] == f"Q: {p.prompt} A: {r['candidate']}"
    # the label, checked independently by reasoning-gym's own scorer
    assert (reasoning.score(p, f"Answer: {r['candidate']}") == 1.0) == bool(r["hard_label"]), r
    if r["hard_label"]:
      continue
    assert r["candidate"] != p.answer
    if r["distractor"] in ("word_swap", "char_swap", "list_swap"):  # one adjacent pair of parts swapped
      got, gold = _parts(r["candidate"], r["distractor"]), _parts(p.answer, r["distractor"])
      diff = [i for i, (a, b) in enumerate(zip(got, gold, strict=True)) if a != b]
      assert len(diff) == 2 and diff[1] == diff[0] + 1, (r["candidate"], p.answer)
      assert (got[diff[0]], got[diff[1]]) == (gold[diff[1]], gold[diff[0]])
    if r["distractor"] == "list_drop":
      assert len(r["candidate"].split(", ")) == len(p.answer.split(", ")) - 1
    if r["distractor"] == "op_swap":  # the same numbers and brackets, one binary operator changed
      got, gold = (re.findall(r"\d+|[-+*/()]", t) for t in (r["candidate"], p.answer))
      diff = [i for i, (a, b) in enumerate(zip(got, gold, strict=True)) if a != b]
      assert len(diff) == 1 and {got[diff[0]], gold[diff[0]]} <= set("+-*/"), (r["candidate"], p.answer)
  kinds = {r["distractor"] for r in train if not r["hard_label"]}
  assert kinds == STRING_TASKS[task], kinds


def test_hand_made_near_misses():
  rng = random.Random(0)
  assert w2s_sets.swap_words("You have tried it already?", random.Random(1)) in {
    "You tried have it already?", "You have it tried already?", "You have tried already it?"}
  assert w2s_sets.swap_words("Smith has", rng) == "has Smith"  # two words: the only pair
  assert w2s_sets.swap_words("the the", rng) is None
  assert w2s_sets.swap_chars("talps", random.Random(0)) in {"atlps", "tlaps", "tapls", "talsp"}
  assert w2s_sets.swap_chars("aa", rng) is None
  assert w2s_sets.edit_list("b, a", rng, drop=False) == "a, b"
  assert w2s_sets.edit_list("b, a", rng, drop=True) in {"a", "b"}
  # spaced as the expression spaces each operator: "+" with spaces, "*" without
  assert {w2s_sets.swap_operator("2*3 + 4", random.Random(k)) for k in range(60)} == {
    "2 + 3 + 4", "2 - 3 + 4", "2/3 + 4", "2*3 - 4", "2*3*4", "2*3/4"}
  assert w2s_sets.swap_operator("42", rng) is None and w2s_sets.swap_operator("-5", rng) is None
  with pytest.raises(ValueError, match="data.template 'X {answer}'"):
    w2s_sets.make_records([], seed=0, template="X {answer}")


def test_template_writes_the_text():
  train = w2s_sets.generate("sentence_reordering", "train", 20, seed=0, template="Sentence: {candidate}")
  assert all(r["txt"] == f"Sentence: {r['candidate']}" for r in train)


def test_any_two_word_swap_is_selectable_and_rejected_by_the_scorer():
  with pytest.raises(ValueError, match=r"data.distractors: unknown kinds \['nope'\]"):
    w2s_sets.generate("sentence_reordering", "train", 4, distractors=("nope",))
  train = w2s_sets.generate("sentence_reordering", "train", 80, seed=0, distractors=("word_swap_any",))
  problems = {p.prompt: p for p in reasoning.generate("sentence_reordering", "w2s_train", 80, seed=0)}
  far = 0
  for r in train:
    p = problems[r["question"]]
    assert (reasoning.score(p, f"Answer: {r['candidate']}") == 1.0) == bool(r["hard_label"])
    if not r["hard_label"]:
      assert r["distractor"] == "word_swap_any"
      got, gold = _parts(r["candidate"], "word_swap"), _parts(p.answer, "word_swap")
      diff = [i for i, (a, b) in enumerate(zip(got, gold, strict=True)) if a != b]
      assert len(diff) == 2 and (got[diff[0]], got[diff[1]]) == (gold[diff[1]], gold[diff[0]])
      far += diff[1] > diff[0] + 1
  assert far >= 10  # not only adjacent pairs
  rng = random.Random(0)
  assert w2s_sets.swap_words("one two three", rng, adjacent=False) in {"one three two"}  # first word stays
