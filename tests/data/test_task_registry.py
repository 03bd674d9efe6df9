"""Tasks by name or reference (`task_registry`): reasoning-gym names with options, files, user functions,
either import order, an explicit pretraining corpus, and length limits that name the key to raise."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from w2s_jax.data import corpus, limits, reasoning, sft_sources, task_registry
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.rl.rollout import encode_prompts

USER_MODULE = '''
def problems(split, size, seed, offset=0):
  return [{"prompt": f"What is {i} + {offset}?", "answer": str(i + offset), "steps": [f"{i} + {offset}"]}
          for i in range(size + 3)]  # more than asked: the registry keeps `size`
'''


def test_any_reasoning_gym_task_by_name_with_options():
  problems = task_registry.problems("letter_counting", "train", size=20, seed=1,
                                    options={"min_words": 3, "max_words": 3})
  assert len(problems) == 20 and all(p.task == "letter_counting" and p.steps == () for p in problems)
  assert all(len(json.loads(p.metadata)["span"]) == 3 for p in problems)  # the option reached the generator
  assert all(reasoning.grade(p, p.solution).correct for p in problems)
  evals = task_registry.problems("letter_counting", "eval", size=10, train_size=20, seed=1,
                                 options='{"min_words": 3, "max_words": 3}')  # JSON text, as on the CLI
  assert not {p.prompt for p in evals} & {p.prompt for p in problems}
  with pytest.raises(ValueError, match="data.task_options"):
    task_registry.problems("letter_counting", "train", size=2, options={"min_wordz": 3})
  with pytest.raises(ValueError, match="unknown task 'letter_countin'"):
    task_registry.problems("letter_countin", "train", size=2)


def test_user_function_by_reference_and_by_registration(tmp_path, monkeypatch):
  (tmp_path / "user_task_mod.py").write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  train = task_registry.problems("user_task_mod:problems", "train", size=5, options={"offset": 10})
  assert [p.answer for p in train] == ["10", "11", "12", "13", "14"]
  assert train[0].scorer == "exact" and train[0].solution == "0 + 10\nAnswer: 10"
  assert reasoning.grade(train[1], "Answer: 11").correct
  assert not reasoning.grade(train[1], "Answer: 111").correct
  # eval repeats no train prompt: this function gives the same prompts for every split
  evals = task_registry.problems("user_task_mod:problems", "eval", size=5, train_size=5,
                                 options={"offset": 10})
  assert [p.answer for p in evals] == ["15", "16", "17"]
  by_path = task_registry.problems(f"{tmp_path}/user_task_mod.py:problems", "train", size=2)
  assert [p.answer for p in by_path] == ["0", "1"]
  monkeypatch.setitem(task_registry.USER_TASKS, "sums",
                      lambda split, size, seed: [{"prompt": "1+1", "answer": 2}])
  assert "sums" in sft_sources.SFT_CORPORA and "sums" in list(sft_sources.SFT_CORPORA)
  pairs, _ = sft_sources.SFT_CORPORA["sums"]("train", {"train_size": 4})
  assert pairs == [("Question: 1+1\nSolution:\n", "Answer: 2")]
  monkeypatch.setitem(task_registry.USER_TASKS, "bad", lambda split, size, seed: [{"prompt": "1+1"}])
  with pytest.raises(ValueError, match=r"task 'bad' \(train problem 0\): field 'answer'"):
    task_registry.problems("bad", "train", size=1)


def test_file_task_with_splits_and_per_record_scorers(tmp_path):
  path = tmp_path / "qa.jsonl"
  records = [{"prompt": f"Spell {w} backward", "answer": w[::-1], "split": "train"} for w in ("cat", "dog")]
  records += [{"prompt": "What is 6 x 7?", "answer": "42", "scorer": "number", "split": "eval"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  train = task_registry.problems(str(path), "train", size=10)
  evals = task_registry.problems(str(path), "eval", size=10, train_size=10)
  assert [p.answer for p in train] == ["tac", "god"] and [p.answer for p in evals] == ["42"]
  assert reasoning.grade(evals[0], "Answer: 42.0").correct  # the record's `number` scorer
  assert not reasoning.grade(train[0], "Answer: tacs").correct  # `exact` by default
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"prompt": "x", "answer": "y", "scorer": "fuzzy"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl: record 1: field 'scorer'"):
    task_registry.problems(str(bad), "train", size=1, options={"eval_frac": 0.0})
  with pytest.raises(ValueError, match="does not exist"):
    task_registry.problems(str(tmp_path / "missing.jsonl"), "train", size=1)


@pytest.mark.parametrize("tasks_first", [True, False])
def test_registry_works_in_either_import_order(tasks_first, tmp_path):
  imports = ["from w2s_jax.train import tasks", "from w2s_jax.data import task_registry, reasoning"]
  script = "\n".join([
    *(imports if tasks_first else imports[::-1]),
    "task_registry.register_task('mine', lambda split, size, seed: [{'prompt': 'p' + split, 'answer': 'a'}])",
    "pairs, _ = tasks.CORPORA['mine']('train', {'train_size': 1})",
    "assert pairs == [('Question: ptrain\\nSolution:\\n', 'Answer: a')], pairs",
    "reasoning.TASKS['chain_sum_copy'] = reasoning.TASKS['chain_sum']  # a late worked-solution task",
    "assert 'chain_sum_copy' in tasks.CORPORA and 'countdown' in tasks.CORPORA",
    "print('ok')",
  ])
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_pretraining_corpus_lists_its_tasks(monkeypatch):
  monkeypatch.setitem(reasoning.TASKS, "gcd_again", reasoning.TASKS["gcd"])
  monkeypatch.setitem(task_registry.USER_TASKS, "mine", lambda split, size, seed: [])
  sources = {source for _, source, _ in corpus.reasoning_documents(2, 0)}
  assert sources == {f"reasoning/{t}" for t in corpus.PRETRAIN_TASKS}


def test_sft_length_limit_names_the_key_and_the_longest_example():
  tok = ByteTokenizer()
  pairs, _ = sft_sources.SFT_CORPORA["countdown"]("train", {"train_size": 16})
  longest = max(1 + len(tok.encode(p)) + len(tok.encode(r)) for p, r in pairs)
  with pytest.raises(limits.LengthLimitError, match=rf"seq_len=256 .*data.seq_len to at least {longest}"):
    limits.check_examples(pairs, tok, 256, overlong="error", batch_size=8, split="train")
  with pytest.raises(limits.LengthLimitError, match="left no example") as e:
    limits.check_examples(pairs, tok, 256, overlong="drop", batch_size=8, split="train")
  assert "sft.seq_len to at least" in str(e.value.renamed("sft.seq_len"))
  limits.check_examples(pairs, tok, longest, overlong="error", batch_size=8, split="train")
  mixed = pairs[:1] + [("q", "a")] * 3  # one too long, three short ones packed into one row
  with pytest.raises(limits.LengthLimitError, match="fewer rows than a batch of 2"):
    limits.check_examples(mixed, tok, 64, overlong="drop", batch_size=2, split="train")
  limits.check_examples(mixed, tok, 64, overlong="drop", batch_size=1, split="train")  # counted skip


def test_long_prompts_error_names_max_prompt_len_or_are_counted():
  tok = ByteTokenizer()
  problems = task_registry.problems("countdown", "train", size=8)
  problems += reasoning.generate("chain_sum", "train", 2)
  need = max(1 + len(tok.encode(sft_sources.reasoning_prompt(p))) for p in problems)
  with pytest.raises(limits.LengthLimitError, match=rf"8 of 10 prompts .*max_prompt_len=128 .*least {need}"):
    encode_prompts(problems, tok, 128, on_long="error")
  skipped = encode_prompts(problems, tok, 128, on_long="skip")
  assert skipped.dropped == 8 and len(skipped.problems) == 2
  fits = encode_prompts(problems, tok, need, on_long="error")
  assert fits.dropped == 0 and fits.tokens_BP.shape == (10, need) and np.all(fits.mask_BP.sum(1) <= need)
