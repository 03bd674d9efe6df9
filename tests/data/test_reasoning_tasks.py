"""reasoning-gym adapters: worked steps (hand-computed), scoring with the task's own scorer, splits."""

import json

import pytest

from w2s_jax.data import reasoning


def _entry(**metadata):
  return {"question": "", "answer": "", "metadata": metadata}


def test_chain_sum_steps_are_running_totals():
  assert reasoning.TASKS["chain_sum"].steps(_entry(expression="4 - 1 - 7")) == ["4 - 1 = 3", "3 - 7 = -4"]
  assert reasoning.TASKS["chain_sum"].steps(_entry(expression="120 + 35")) == ["120 + 35 = 155"]


def test_gcd_steps_follow_euclid():
  # 780 = 1·461 + 319, 461 = 1·319 + 142, 319 = 2·142 + 35, 142 = 4·35 + 2, 35 = 17·2 + 1, 2 = 2·1 + 0
  assert reasoning.TASKS["gcd"].steps(_entry(numbers=[780, 461])) == [
    "780 = 1 × 461 + 319", "461 = 1 × 319 + 142", "319 = 2 × 142 + 35", "142 = 4 × 35 + 2",
    "35 = 17 × 2 + 1", "2 = 2 × 1 + 0", "gcd(780, 461) = 1",
  ]


def test_base_conversion_steps():
  # 115 in base 11 = 121 + 11 + 5 = 137; 137 = 9·15 + 2 → "92" in base 15.
  steps = reasoning.TASKS["base_conversion"].steps(
    _entry(source_base=11, target_base=15, decimal_value=137, source_repr="115"))
  assert steps == ["115 in base 11 = 1×11^2 + 1×11^1 + 5×11^0 = 137 in base 10",
                   "137 = 9 × 15 + 2 → digit 2", "9 = 0 × 15 + 9 → digit 9",
                   "Reading the digits from last to first: 92"]
  to_ten = reasoning.TASKS["base_conversion"].steps(
    _entry(source_base=2, target_base=10, decimal_value=5, source_repr="101"))
  assert to_ten == ["101 in base 2 = 1×2^2 + 0×2^1 + 1×2^0 = 5 in base 10"]


def test_gsm_steps_are_the_cot_lines_without_the_final_marker():
  cot = "Let's solve:\n\n1. 35 × 3 = 105 kiwi\n   • total 140\n#### 288"
  assert reasoning.TASKS["gsm_symbolic"].steps(_entry(answer_cot=cot)) == [
    "Let's solve:", "1. 35 × 3 = 105 kiwi", "• total 140"]


@pytest.mark.parametrize("task", sorted(reasoning.TASKS))
def test_worked_solutions_reach_the_reference_answer(task):
  problems = reasoning.generate(task, "train", 60, seed=3)
  assert len(problems) == 60 and len({p.prompt for p in problems}) == 60
  for p in problems:
    # the answer is computed in the steps: in the last step (in the last few for GSM's free-form lines)
    shown = " ".join(p.steps[-3:] if task == "gsm_symbolic" else p.steps[-1:])
    if task == "base_conversion":
      assert shown.endswith(p.answer) or shown.endswith(f"{p.answer} in base 10"), (p.steps, p.answer)
    else:
      assert float(p.answer) in {float(n) for n in reasoning.numbers_in(shown)}, (p.steps, p.answer)
    assert reasoning.score(p, p.solution) == 1.0  # the task's own scorer accepts our solution
    wrong = "Answer: 1" + p.answer
    assert reasoning.score(p, wrong) < 1.0


def test_extract_answer():
  assert reasoning.extract_answer("a\nb = 3\nAnswer: 42") == "42"
  assert reasoning.extract_answer("Answer: 1\nAnswer:  7 \nmore") == "7"
  assert reasoning.extract_answer("so 5\n#### 5") == "5"
  assert reasoning.extract_answer("no answer here") is None
  p = reasoning.generate("gcd", "train", 1)[0]
  assert reasoning.score(p, "I think it is " + p.answer) == 0.0  # unmarked answers do not count


def test_splits_are_disjoint_and_deterministic():
  train = reasoning.generate("chain_sum", "train", 300, seed=1)
  test = reasoning.generate("chain_sum", "test", 100, seed=1, exclude={p.prompt for p in train})
  assert not {p.prompt for p in train} & {p.prompt for p in test}
  assert reasoning.generate("chain_sum", "train", 300, seed=1) == train
  assert reasoning.generate("chain_sum", "train", 300, seed=2) != train
  assert [p.id for p in test[:2]] == ["chain_sum-test-0", "chain_sum-test-1"]


def test_problem_round_trips_through_a_bytes_record():
  p = reasoning.generate("gsm_symbolic", "train", 1)[0]
  record = {k: getattr(p, k).encode() for k in ("id", "task", "prompt", "answer", "metadata")}
  record["steps"] = [s.encode() for s in p.steps]
  assert reasoning.Problem.from_record(record) == p
  assert json.loads(p.metadata)["answer_cot"].endswith(f"#### {p.answer}")


def test_unknown_task_names_the_choices():
  with pytest.raises(ValueError, match="gsm_symbolic"):
    reasoning.generate("gsm8k", "train", 1)
