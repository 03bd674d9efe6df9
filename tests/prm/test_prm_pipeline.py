"""The `prm_pipeline` task end to end through the entry point, and its labels recomputed from what it saved.

Two smoke runs: Math-Shepherd hard labels, then OmegaPRM labels, both from the RL smoke SFT model. The
saved rollouts are checked against independent recomputations: every solution's and every Monte Carlo
completion's correctness is re-scored with the task's scorer from the saved text, step ends are re-derived
from the tokens, and the labels are recomputed from the saved completion outcomes in plain Python.
"""

import json

import numpy as np
import pytest

from tests.helpers import load_config, run_main
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
NL = TOK.encode("\n")[0]


def _decode(ids):
  """Reference decoding: bytes of ids 3..258 (special ids dropped); an id past the byte range is U+FFFD."""
  out, run = [], []
  for i in ids:
    if i >= TOK.vocab_size:
      out += [bytes(run).decode("utf-8", errors="replace"), "\ufffd"]
      run = []
    elif i >= TOK.offset:
      run.append(i - TOK.offset)
  return "".join([*out, bytes(run).decode("utf-8", errors="replace")])


def _n_tokens_at_least(text):
  """A lower bound on the tokens behind a decoded text (each U+FFFD stood for at least one token)."""
  return len(text.replace("\ufffd", "x").encode("utf-8"))


def _run(workdir, *extra):
  out = run_main(["--config=configs/prm_tiny.py:smoke", f"--workdir={workdir}", *extra])
  assert out.returncode == 0, out.stderr[-4000:]
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, rl_smoke_sft):
  # Both start from the RL smoke configs' SFT model (prm_tiny's SFT section is theirs; one device).
  shared = (f"--config.sft.workdir={rl_smoke_sft}", "--config.mesh.data=1")
  hard = tmp_path_factory.mktemp("prm_hard")
  out_hard = _run(hard, *shared)
  omega = tmp_path_factory.mktemp("prm_omega")
  out_omega = _run(omega, "--config.label.method=omega", *shared)
  return {"mc_hard": (hard, out_hard), "omega": (omega, out_omega)}


@pytest.fixture(scope="module")
def problems():
  c = load_config("prm_tiny", "smoke")
  return reasoning_problems(c.data.task, "train", size=c.label.problems, seed=c.data.seed)


def _records(workdir):
  return [json.loads(line) for line in (workdir / "labels.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["mc_hard", "omega"])
def test_results_json_fields(runs, method):
  workdir, out = runs[method]
  c = load_config("prm_tiny", "smoke")
  res = json.loads((workdir / "results.json").read_text())
  assert json.loads(out.stdout.strip().splitlines()[-1])["method"] == method == res["method"]
  assert res["n"] == c.eval.samples and res["eval_problems"] == c.data.eval_size
  names = {"random_pick", "majority_vote", "prm_weighted_vote_min", "oracle_pass@n",
           *(f"prm_best_of_n_{r}" for r in ("min", "last", "prod", "mean"))}
  assert set(res["selection"]) == names
  for v in res["selection"].values():
    assert 0.0 <= v["ci95"][0] <= v["acc"] <= v["ci95"][1] <= 1.0
  sel = res["selection"]
  assert all(sel[k]["acc"] <= sel["oracle_pass@n"]["acc"] for k in names)  # nobody beats pass@n
  assert sel["random_pick"]["acc"] == pytest.approx(res["pass_maj"]["pass@1"])
  assert res["prm"]["final_step"] == c.total_steps and np.isfinite(res["prm"]["last"]["loss"])
  metrics = [json.loads(line) for line in (workdir / "prm" / "metrics.jsonl").read_text().splitlines()]
  assert metrics[-1]["step"] == c.total_steps and all(np.isfinite(m["loss"]) for m in metrics)
  assert res["labels"]["solutions"] == c.label.problems * c.label.solutions_per_problem
  assert set(res["wall_s"]) == {"sft", "labels", "prm_train", "eval", "total"}


@pytest.mark.parametrize("method", ["mc_hard", "omega"])
def test_saved_rollouts_rescore_and_budget(runs, problems, method):
  workdir, _ = runs[method]
  c = load_config("prm_tiny", "smoke")
  K, N = c.label.rollouts_per_step, c.rollout.max_new_tokens
  for rec in _records(workdir):
    problem = problems[rec["problem"]]
    assert problem.id == rec["problem_id"]
    assert rec["prompt_ids"] == [TOK.bos_id, *TOK.encode(f"Question: {problem.prompt}\nSolution:\n")]
    ids = rec["completion_ids"]
    assert _decode(ids) == rec["text"] and len(ids) <= N
    assert rec["outcome"] == float(reasoning.score(problem, rec["text"]) >= 1.0)
    ends = [i for i, t in enumerate(ids) if t == NL]
    if not ends or ends[-1] != len(ids) - 1:
      ends.append(len(ids) - 1)
    assert rec["step_ends"] == ends
    for step, mc in rec["mc"].items():
      end = rec["step_ends"][int(step)]
      assert int(step) < len(ends) - 1  # the last step's value is the outcome, never sampled
      assert len(mc["correct"]) == len(mc["texts"]) == K
      prefix = _decode(ids[: end + 1])
      for ok, text in zip(mc["correct"], mc["texts"]):
        assert ok == float(reasoning.score(problem, prefix + text) >= 1.0)
        assert _n_tokens_at_least(text) <= N - (end + 1)  # the solution's own budget


def test_mc_hard_labels_recomputed(runs):
  workdir, _ = runs["mc_hard"]
  recs = _records(workdir)
  meta = json.loads((workdir / "labels_meta.json").read_text())["stats"]
  sampled = 0
  for rec in recs:
    n = len(rec["step_ends"])
    assert sorted(map(int, rec["mc"])) == list(range(n - 1))
    want = [float(any(rec["mc"][str(i)]["correct"])) for i in range(n - 1)] + [rec["outcome"]]
    assert rec["labels"] == want and rec["label_mask"] == [True] * n
    sampled += sum(len(m["correct"]) for m in rec["mc"].values())
  assert meta["mc_completions"] == sampled
  assert meta["label_mean"] == pytest.approx(np.mean([y for r in recs for y in r["labels"]]))


def test_omega_labels_recomputed(runs):
  workdir, _ = runs["omega"]
  for rec in _records(workdir):
    n, e = len(rec["step_ends"]), rec["first_error"]
    value = {int(i): np.mean(m["correct"]) for i, m in rec["mc"].items()}
    if rec["outcome"] == 1.0:
      assert e == n and value == {} and rec["labels"] == [1.0] * n
      continue
    assert 0 <= e < n
    assert e == n - 1 or value[e] == 0.0  # the first error has MC value 0 (the last step: the outcome)
    assert e == 0 or value[e - 1] > 0.0  # and the step before it was seen to reach the answer
    assert len(value) <= int(np.floor(np.log2(max(n - 1, 1)))) + 1
    assert rec["labels"] == [1.0] * e + [0.0] * (n - e)
    assert rec["label_mask"] == [True] * (e + 1) + [False] * (n - e - 1)
