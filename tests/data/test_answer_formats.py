"""Answer formats and grading against reasoning-gym's own `extract_answer` + `score_answer` (real data)."""

import dataclasses
import functools

import pytest
import reasoning_gym
from reasoning_gym.utils import extract_answer as rg_extract

from w2s_jax.data import answers, reasoning

AGREEMENT_TASKS = ["chain_sum", "gcd", "base_conversion", "leg_counting", "spell_backward", "word_sorting",
                   "family_relationships", "countdown", "letter_counting", "basic_arithmetic",
                   "number_sorting"]


@functools.cache
def _problems(task: str) -> tuple[reasoning.Problem, ...]:
  """200 train problems of `task` (seed 11), generated once for the module: both format tests read them
  (generating countdown's takes seconds); `answer_format` is a field, the solution derived from it."""
  return tuple(reasoning.generate(task, "train", 200, seed=11))


def _in_format(task: str, answer_format: str) -> list[reasoning.Problem]:
  """`_problems(task)` stating their answers in `answer_format` (what `generate(..., answer_format=)`
  returns for the same seed)."""
  return [dataclasses.replace(p, answer_format=answer_format) for p in _problems(task)]


def _completions(p: reasoning.Problem, other: reasoning.Problem) -> list[str]:
  gold = p.answer
  return [
    f"Let me think.\n<answer>{gold}</answer>",  # gold
    f"<answer> {gold} </answer>\n",  # reasoning-gym strips one space inside the tags
    f"<answer>{gold}x</answer>",  # gold plus a suffix (the spell_backward float trap)
    f"<answer>{gold[:-1]}</answer>" if len(gold) > 1 else "<answer></answer>",  # a prefix
    f"<answer>{gold}.</answer>",  # trailing period
    f"<answer>{other.answer}</answer>",  # another problem's answer
    f"<answer>1</answer> then <answer>{gold}</answer>",  # the last tag counts
    f"I think it is {gold}",  # no tag: no answer
  ]


@pytest.mark.parametrize("task", AGREEMENT_TASKS)
def test_grade_agrees_with_reasoning_gym_extract_and_score(task):
  problems = _in_format(task, "answer_tag")
  assert len(problems) == 200
  rg_score = reasoning_gym.get_score_answer_fn(task)
  for i, p in enumerate(problems):
    for text in _completions(p, problems[(i + 1) % len(problems)]):
      g = reasoning.grade(p, text)
      want_answer = rg_extract(text)
      want_credit = rg_score(want_answer, p.entry())
      assert g.answer == want_answer, (text, g)
      assert g.credit == want_credit, (text, g, want_credit)  # exactly reasoning-gym's partial credit
      # correct iff reasoning-gym gives exactly full marks (1.0000000000000002 is not full marks)
      assert g.correct == (want_credit == 1.0), (text, g, want_credit)
    assert reasoning.grade(p, p.solution).correct  # the SFT target states the answer in the format


@pytest.mark.parametrize("task", AGREEMENT_TASKS)
def test_boxed_answers_are_scored_by_the_tasks_scorer(task):
  problems = _in_format(task, "boxed")
  assert len(problems) == 200
  rg_score = reasoning_gym.get_score_answer_fn(task)
  for i, p in enumerate(problems):
    other = problems[(i + 1) % len(problems)].answer
    for text, inner in [(f"so the result is \\boxed{{{p.answer}}}.", p.answer),
                        (f"\\boxed{{{other}}}", other), (f"\\boxed{{{p.answer}1}}", p.answer + "1")]:
      g = reasoning.grade(p, text)
      assert g.answer == inner
      assert g.credit == rg_score(inner, p.entry())
      assert g.correct == (g.credit == 1.0)
    assert p.solution.endswith(f"\\boxed{{{p.answer}}}") and reasoning.grade(p, p.solution).correct


def test_spell_backward_gold_plus_suffix_is_wrong():
  problems = reasoning.generate("spell_backward", "train", 400, seed=0)
  trapped = [p for p in problems if reasoning.grade(p, f"Answer: {p.answer}t.").credit > 1.0]
  assert trapped, "reasoning-gym's float sum no longer overflows; keep the test honest by finding a case"
  for p in trapped:
    text = f"Answer: {p.answer}t."
    assert reasoning_gym.get_score_answer_fn("spell_backward")(f"{p.answer}t.", p.entry()) > 1.0
    assert not reasoning.grade(p, text).correct
    assert reasoning.score(p, text) < 1.0  # callers testing `score >= 1.0` see it wrong too
    assert reasoning.score(p, f"Answer: {p.answer}") == 1.0
  q = dataclasses.replace(problems[0], answer="tolorillo"[::-1], metadata='{"word": "tolorillo"}')
  assert q.answer == "ollirolot" and not reasoning.grade(q, "Answer: ollirolot.").correct


def test_extractors():
  assert answers.extract("a\nAnswer: 4\nAnswer:  7 \nmore") == "7"
  assert answers.extract("so 5\n#### 5") == "5"
  assert answers.extract("<answer>3</answer> <answer> 9 </answer>", "answer_tag") == "9"
  assert answers.extract("no tags", "answer_tag") is None
  assert answers.extract(r"\boxed{\frac{1}{2}} and \boxed{x^{2}}", "boxed") == "x^{2}"
  assert answers.extract(r"\boxed{12", "boxed") is None
  assert answers.extract("it costs 1,250.5 then 7 dollars", "last_number") == "7"
  assert answers.extract("1,250.5 dollars", "last_number") == "1250.5"
  assert answers.extract(r"Answer: 3 ... <answer>4</answer> ... \boxed{5}", "any") == "5"
  assert answers.extract(r"\boxed{5} Answer: 3", "any") == "3"
  assert answers.extract("nothing", "any") is None
  for fmt in ("answer_line", "answer_tag", "boxed", "last_number", "any"):
    assert answers.extract("x\n" + answers.state("42", fmt), fmt) == "42"
  with pytest.raises(ValueError, match="data.answer_format='xml'"):
    answers.extract("x", "xml")
  with pytest.raises(ValueError, match="cannot import"):
    answers.extract("x", "no_such_module_w2s:f")


def test_user_extractor_and_scorer_by_reference(tmp_path, monkeypatch):
  (tmp_path / "my_fmt.py").write_text(
    "def first_word(completion):\n  words = completion.split()\n  return words[0] if words else None\n\n"
    "def half(answer, entry):\n  return 0.5 if answer == entry['answer'] else 0.0\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  p = reasoning.Problem("u-0", "mine", "Say hi", "hi", (), "{}", scorer="exact",
                        answer_format="my_fmt:first_word")
  assert reasoning.grade(p, "hi there") == reasoning.Grade("hi", True, 1.0)
  assert reasoning.grade(p, "ho there") == reasoning.Grade("ho", False, 0.0)
  q = dataclasses.replace(p, scorer="my_fmt:half")
  assert reasoning.grade(q, "hi") == reasoning.Grade("hi", True, 0.5)  # equals the reference answer
  assert reasoning.grade(dataclasses.replace(p, scorer="number", answer="12"), "12.0 ok").correct
  with pytest.raises(ValueError, match="unknown scorer 'fuzzy'"):
    reasoning.grade(dataclasses.replace(p, scorer="fuzzy"), "hi")
