"""Reward terms composed from the config: each one separately, their sum, user terms, the float trap."""

import numpy as np
import pytest

from w2s_jax.data import reasoning
from w2s_jax.rl.rollout import RewardConfig, score_rows


def test_every_term_is_kept_separately_and_they_sum_to_the_reward(tmp_path, monkeypatch):
  (tmp_path / "my_reward.py").write_text(
    "def brevity(problem, completion, answer):\n"
    "  return 1.0 if answer == problem.answer and len(completion) < 16 else 0.0\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  p = reasoning.generate("chain_sum", "train", 1, seed=7)[0]
  texts = [f"Answer: {p.answer}", f"Answer: {p.answer}9", "no answer", f"so\nit is\nAnswer: {p.answer}"]
  cfg = RewardConfig(correct_coef=1.0, partial_coef=0.5, format_coef=0.25, length_coef=0.1,
                     overlong_buffer=16, custom="my_reward:brevity", custom_coef=2.0)
  stopped, lengths = np.array([1, 1, 1, 0], bool), np.array([10, 20, 60, 64])
  out = score_rows([p], texts, stopped, 4, lengths, 64, cfg)
  terms = out["reward_terms"]
  assert set(terms) == {"correct", "partial", "format", "overlong", "length", "custom"}
  partial = reasoning.grade(p, texts[1]).credit
  assert 0 < partial < 1  # chain_sum gives partial credit when gold occurs in a wrong answer
  np.testing.assert_array_equal(terms["correct"], [1, 0, 0, 1])
  np.testing.assert_allclose(terms["partial"], 0.5 * np.array([1, partial, 0, 1]), rtol=1e-6)
  np.testing.assert_array_equal(terms["format"], [0.25, 0.25, 0, 0])  # stated and stopped
  np.testing.assert_allclose(terms["overlong"], [0, 0, -12 / 16, -1], atol=1e-6)
  np.testing.assert_allclose(terms["length"], -0.1 * lengths / 64, rtol=1e-6)
  want_custom = [2.0 * (reasoning.extract_answer(t) == p.answer and len(t) < 16) for t in texts]
  assert want_custom[0] == 2.0 and want_custom[3] == 0.0
  np.testing.assert_array_equal(terms["custom"], want_custom)
  np.testing.assert_allclose(out["rewards_R"], np.sum(list(terms.values()), axis=0), rtol=1e-6)
  np.testing.assert_allclose(out["credit_R"], [1, partial, 0, 1], rtol=1e-6)
  # defaults: correctness alone
  assert set(score_rows([p], texts, stopped, 4, lengths, 64, RewardConfig())["reward_terms"]) == {"correct"}


def test_bad_user_terms_fail_naming_the_key(tmp_path, monkeypatch):
  (tmp_path / "bad_reward.py").write_text("def nan(problem, completion, answer):\n  return float('nan')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  p = reasoning.generate("chain_sum", "train", 1)[0]
  args = ([p], ["Answer: 1"], np.ones(1, bool), 1, np.ones(1), 8)
  with pytest.raises(ValueError, match="reward.custom='bad_reward:nan' returned nan for row 0"):
    score_rows(*args, RewardConfig(custom="bad_reward:nan"))
  with pytest.raises(ValueError, match="reward.custom='bad_reward:missing'.*no function 'missing'"):
    score_rows(*args, RewardConfig(custom="bad_reward:missing"))


def test_spell_backward_suffix_gets_no_correctness_reward():
  problems = reasoning.generate("spell_backward", "train", 400, seed=0)
  trapped = [p for p in problems if reasoning.grade(p, f"Answer: {p.answer}t.").credit > 1.0][:4]
  assert trapped
  texts = [f"Answer: {p.answer}t." for p in trapped]
  out = score_rows(trapped, texts, np.ones(len(texts), bool), 1, np.full(len(texts), 5), 64, RewardConfig())
  np.testing.assert_array_equal(out["correct_R"], 0.0)
  np.testing.assert_array_equal(out["rewards_R"], 0.0)
  assert np.all(out["credit_R"] >= 1.0)  # the raw partial credit is still there to see
