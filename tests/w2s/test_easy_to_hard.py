"""Easy-to-hard: difficulty split and re-ranking metrics vs hand-built inputs; the verifier reward vs the
verifier called directly; the gcd configs; the smoke runs (chain_sum; gcd with the RL stage) end to end."""

import json
from decimal import Decimal, InvalidOperation

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import load_config, run_main
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_prompt
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.heads import SequenceClassifier
from w2s_jax.models.presets import get_preset
from w2s_jax.recipes.easy_to_hard import (
  _validate,
  difficulty,
  rerank_metrics,
  rl_config,
  split_by_difficulty,
  verifier_reward,
)
from w2s_jax.rl.sft_init import sft_config


def _same_number(answer, gold: str) -> bool:
  try:
    return answer is not None and Decimal(answer.replace(",", "").strip()) == Decimal(gold)
  except InvalidOperation:
    return False


def _problem(i: int, terms: int) -> reasoning.Problem:
  return reasoning.Problem(id=f"p{i}", task="chain_sum", prompt=f"q{i}", answer="0", steps=(),
                           metadata=json.dumps({"num_terms": terms, "num_digits": 1}))


def test_split_by_difficulty():
  problems = [_problem(i, t) for i, t in enumerate([2, 3, 4, 2, 5, 3])]
  easy, hard = split_by_difficulty(problems, "num_terms", easy_max=2, hard_min=4)
  assert [p.id for p in easy] == ["p0", "p3"]
  assert [p.id for p in hard] == ["p2", "p4"]  # 3 terms is neither
  assert difficulty(problems[4], "num_terms") == 5.0
  with pytest.raises(ValueError, match="easy_max"):
    split_by_difficulty(problems, "num_terms", easy_max=3, hard_min=3)
  with pytest.raises(ValueError, match="num_steps"):
    difficulty(problems[0], "num_steps")


def test_generate_with_difficulty_options():
  """The new `options` keyword of `reasoning.generate` reaches reasoning-gym: count the terms in the text."""
  problems = reasoning.generate("chain_sum", "options-test", 12, seed=3,
                                options={"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1})
  assert len(problems) == 12
  for p in problems:
    expression = p.prompt.rsplit(":", 1)[1].strip().rstrip("=").split()
    numbers = expression[0::2]
    assert len(numbers) == 4 and all(len(n.lstrip("-")) == 1 for n in numbers), p.prompt
    assert json.loads(p.metadata)["num_terms"] == 4
  default = reasoning.generate("chain_sum", "options-test", 12, seed=3)
  assert [p.prompt for p in default] != [p.prompt for p in problems]  # unchanged default call


def test_rerank_metrics_hand_computed():
  correct = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
  answers = [["1", "2", "2"], ["5", "5", None], [None, None, None]]
  scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.2, 0.99], [0.5, 0.5, 0.5]])
  m = rerank_metrics(correct, answers, scores)
  # p0: majority "2" is wrong; best-of-N picks sample 0 (right); weighted vote "1" 0.9 > "2" 0.5 (right).
  # p1: the unanswered sample 2 has the top score but cannot be picked; every pick is right.
  # p2: nothing stated: every pick is wrong.
  assert m == pytest.approx({"random": 1 / 3, "majority": 1 / 3, "verifier_best_of_n": 2 / 3,
                             "verifier_weighted_vote": 2 / 3, "oracle": 2 / 3})
  with pytest.raises(ValueError, match="shapes differ"):
    rerank_metrics(correct, answers, scores[:, :2])


def _euclid_divisions(a: int, b: int) -> int:
  n = 0
  while b:
    a, b, n = b, a % b, n + 1
  return n


def test_gcd_difficulty_keys():
  """`max:numbers` / `min:numbers` = the numbers in the question's text; `solution_steps` of a real gcd
  problem = Euclid's divisions (counted here) + the closing gcd line."""
  for p in reasoning.generate("gcd", "steps-test", 20, seed=1):
    a, b = (int(x) for x in p.prompt.split("numbers: ")[1].split(".")[0].split(", "))  # from the text
    assert difficulty(p, "solution_steps") == _euclid_divisions(max(a, b), min(a, b)) + 1, p.prompt
    assert difficulty(p, "max:numbers") == max(a, b) and difficulty(p, "min:numbers") == min(a, b)
  with pytest.raises(ValueError, match="avg:numbers"):
    difficulty(p, "avg:numbers")
  three = reasoning.Problem(id="x", task="gcd", prompt="q", answer="1", steps=("a", "b", "c"), metadata="{}")
  assert difficulty(three, "solution_steps") == 3.0


def test_gcd_configs():
  with pytest.raises(ValueError, match="unknown config arg"):
    load_config("easy_to_hard", "gcd_full")
  c = load_config("easy_to_hard", "gcd")
  assert c.data.task == "gcd" and c.rl.enabled and c.data.difficulty_key == "max:numbers"
  assert c.data.easy_max < c.data.hard_min and not c.data.options.to_dict()
  _validate(c)  # passes: empty options, same completion budget as grpo_gain
  v, g = rl_config(c, "verifier", "/x/sft"), rl_config(c, "gold", "/x/sft")
  assert (v.reward.correct_coef, v.reward.learned_coef) == (0.0, 1.0)  # gold answers never reach training
  assert (g.reward.correct_coef, g.reward.learned_coef) == (1.0, 0.0)
  for r in (v, g):
    assert r.data.task == "gcd" and r.sft.workdir == "/x/sft" and r.total_steps == 8
    assert (r.rollout.prompts_per_step, r.rollout.group_size, r.train.minibatch_size) == (8, 8, 32)
    assert r.rollout.max_new_tokens == c.data.max_new_tokens == 200
  # The policy is grpo_gain's SFT phase exactly, so runs/grpo_gain/sft can be copied in and reused.
  assert sft_config(v).to_dict() == sft_config(load_config("grpo_gain")).to_dict()
  with pytest.raises(ValueError, match="arm"):
    rl_config(c, "mixed", "")
  bad = load_config("easy_to_hard", "gcd")
  bad.data.options = {"max_value": 100}
  with pytest.raises(ValueError, match="data.options"):
    _validate(bad)
  bad = load_config("easy_to_hard", "gcd")
  bad.data.max_new_tokens = 100
  with pytest.raises(ValueError, match="max_new_tokens"):
    _validate(bad)


def test_verifier_reward_matches_verifier_called_directly(tmp_path):
  """The reward handed to train_rl = P(correct) of the classifier on prompt + completion, computed here
  row by row on unpadded token ids (no batching, padding or `classify` code)."""
  tok = ByteTokenizer()
  cfg = get_preset("tiny", vocab_size=512, max_seq_len=256)
  model = SequenceClassifier(cfg, 2, zero_init=False, rngs=nnx.Rngs(3))  # random head: scores differ
  graphdef, params = nnx.split(model)
  problems = reasoning.generate("gcd", "reward-test", 3, seed=2)
  texts = [problems[0].solution, "Answer: 7", problems[2].solution[:40]]
  assert len(tok.encode(reasoning_prompt(problems[0]) + texts[0])) > 255  # exercises the left truncation
  log = tmp_path / "rewards.jsonl"
  fn = verifier_reward(graphdef, params, tok, 256, log_path=log, batch_size=2)
  got = fn(problems, texts)
  want = []
  forward = nnx.jit(lambda m, ids: m(ids, segment_ids_BL=jnp.ones_like(ids)))  # one compilation per length
  for p, t in zip(problems, texts):
    body = tok.encode(reasoning_prompt(p) + t)
    ids = np.asarray([[tok.bos_id, *body[-255:]]], np.int32)  # longer texts keep their end (the answer)
    logits = np.asarray(forward(model, ids), np.float64)[0]
    want.append(np.exp(logits[1]) / np.exp(logits).sum())
  assert got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert np.ptp(got) > 1e-4  # the texts get different scores (a constant would pass trivially otherwise)
  logged = [json.loads(line) for line in log.read_text().splitlines()]
  assert len(logged) == 1 and logged[0]["texts"] == texts and logged[0]["ids"] == [p.id for p in problems]
  np.testing.assert_allclose(logged[0]["scores"], got)
  with pytest.raises(ValueError, match="texts"):
    fn(problems[:2], texts)


def _run(tmp_path_factory, arg: str):
  workdir = tmp_path_factory.mktemp(f"easy_to_hard_{arg}")
  out = run_main([f"--config=configs/easy_to_hard.py:{arg}", f"--workdir={workdir}"],
                 env={"W2S_JAX_CACHE": str(workdir / "cache")})
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return _run(tmp_path_factory, "smoke")


@pytest.fixture(scope="module")
def gcd_smoke_run(tmp_path_factory):
  return _run(tmp_path_factory, "gcd_smoke")


def test_smoke_results(smoke_run):
  results = json.loads((smoke_run / "results.json").read_text())
  assert results["verifier_train"]["problems"] == 24 and results["verifier_train"]["samples"] == 96
  for level in ("easy", "hard"):
    row = results[level]
    samples = json.loads((smoke_run / "stages" / f"test_{level}_samples.json").read_text())
    assert row["problems"] == len(samples["ids"]) == 8 and row["samples_per_problem"] == 4
    # Correctness re-derived from the texts: chain_sum gives full marks iff the stated answer is the gold
    # number (reasoning-gym tolerates a sign, leading zeros, trailing decimals and commas).
    for gold, texts, corrects in zip(samples["gold"], samples["texts"], samples["correct"]):
      for text, c in zip(texts, corrects):
        assert c == float(_same_number(reasoning.extract_answer(text), gold)), (text, gold)
    correct = np.asarray(samples["correct"])
    assert row["random"] == pytest.approx(correct.mean())
    assert row["oracle"] == pytest.approx(correct.max(axis=1).mean())
    for pick in ("random", "majority", "verifier_best_of_n", "verifier_weighted_vote"):
      assert 0.0 <= row[pick] <= row["oracle"] + 1e-12, pick
  # The verifier's scores are probabilities of one sample each.
  scores = json.loads((smoke_run / "stages" / "verifier_scores.json").read_text())
  assert len(scores["hard"]) == 8 * 4 and all(0.0 <= s <= 1.0 for s in scores["easy"] + scores["hard"])
  assert (smoke_run / "verifier" / "checkpoints").is_dir() and (smoke_run / "policy" / "checkpoints").is_dir()


def _metrics(path):
  return [r for r in map(json.loads, path.read_text().splitlines()) if "reward_mean" in r]


def test_gcd_smoke_rl_stage(gcd_smoke_run):
  """The RL loop trained on exactly the verifier's scores (its logged reward means equal the means of the
  scores the verifier reward returned, gold weight 0); the gold arm's reward is the scorer's accuracy; the
  pass@1 table is re-derived from the saved samples."""
  results = json.loads((gcd_smoke_run / "results.json").read_text())
  rl = results["rl"]
  assert rl["iterations"] == 2
  calls = [json.loads(line) for line in (gcd_smoke_run / "stages" / "rl_verifier_rewards.jsonl").open()]
  steps = _metrics(gcd_smoke_run / "rl_verifier" / "metrics.jsonl")
  assert len(calls) == len(steps) == 2  # one verifier call per iteration (B·G = 8 rows)
  for call, rec in zip(calls, steps):
    assert len(call["scores"]) == len(call["texts"]) == 8 and all(0.0 <= x <= 1.0 for x in call["scores"])
    assert all(i.startswith("gcd-train-") for i in call["ids"])  # RL prompts: the train split
    assert rec["reward_mean"] == pytest.approx(float(np.mean(call["scores"])), abs=1e-5)
  assert rl["verifier_arm_train"]["reward_mean"] == [r["reward_mean"] for r in steps]
  gold = _metrics(gcd_smoke_run / "rl_gold" / "metrics.jsonl")
  assert len(gold) == 2 and all(r["reward_mean"] == pytest.approx(r["train_accuracy"]) for r in gold)
  stages = gcd_smoke_run / "stages"
  for level in ("easy", "hard"):
    before = json.loads((stages / f"test_{level}_samples.json").read_text())
    assert rl["pass@1_before"][level] == pytest.approx(np.mean(before["correct"]))
    for arm in ("verifier", "gold"):
      s = json.loads((stages / f"rl_{arm}_test_{level}_samples.json").read_text())
      assert s["ids"] == before["ids"] and len(s["texts"][0]) == 4
      redone = [[float(_same_number(reasoning.extract_answer(t), g)) for t in ts]
                for ts, g in zip(s["texts"], s["gold"])]
      assert rl[f"pass@1_after_{arm}_reward"][level] == pytest.approx(np.mean(redone))
    for pid in before["ids"]:  # held-out problems of the right level, none from the SFT/RL train split
      assert not pid.startswith("gcd-train-")
  assert results["verifier_train"]["problems"] == 8 and results["verifier_train"]["samples"] == 32
