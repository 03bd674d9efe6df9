"""Debate-assisted weak supervision: the pure parts by hand, and the smoke pipeline end to end."""

import json
import math

import numpy as np
import pytest

from tests.helpers import run_main
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.recipes import debate


def test_ensemble_soft_labels_average_members():
  m0 = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
  m1 = np.array([[0.7, 0.3], [0.4, 0.6], [0.0, 1.0]])
  m2 = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
  out = debate.ensemble_soft_labels([m0, m1, m2])
  np.testing.assert_allclose(out, [[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], atol=1e-6)
  assert out.dtype == np.float32
  np.testing.assert_allclose(debate.ensemble_soft_labels([m1]), m1, atol=1e-7)  # k = 1: the member itself


def test_ensemble_soft_labels_rejects_bad_members():
  with pytest.raises(ValueError, match="no members"):
    debate.ensemble_soft_labels([])
  with pytest.raises(ValueError, match="shapes"):
    debate.ensemble_soft_labels([np.full((2, 2), 0.5), np.full((3, 2), 0.5)])
  with pytest.raises(ValueError, match="probability distribution"):
    debate.ensemble_soft_labels([np.array([[0.9, 0.3]])])


def test_debate_text_puts_arguments_first_and_cuts_them():
  text = debate.debate_text("Q: 1 + 1 = A: 2", "it  adds\nup", "x" * 50, item_chars=8, max_arg_chars=10)
  # whitespace collapsed, arguments cut to 10 characters, the item's last 8 characters (the candidate) kept
  assert text == "For: it adds up\nAgainst: xxxxxxxxxx\n1 = A: 2"


def test_debater_prompt_for_a_plain_decoder_and_bad_side():
  record = {"txt": "Q: 3 - 1 = A: 2", "question": "3 - 1 =", "candidate": "2"}
  assert debate.debater_prompt(record, "wrong", ByteTokenizer()) == (
    "Q: 3 - 1 = A: 2\nThe proposed answer is wrong because")
  with pytest.raises(ValueError, match="debate side 'maybe'"):
    debate.debater_prompt(record, "maybe", ByteTokenizer())


def test_load_transcripts_keeps_only_the_same_setting(tmp_path):
  path = tmp_path / "t.jsonl"
  a, b = {"max_new_tokens": 8}, {"max_new_tokens": 16}
  path.write_text("\n".join(json.dumps(r) for r in [
    {"id": "x", "setting": a, "for": "f1", "against": "a1"},
    {"id": "y", "setting": b, "for": "f2", "against": "a2"},
  ]) + "\n")
  assert debate.load_transcripts(path, a) == {"x": {"for": "f1", "against": "a1"}}
  assert debate.load_transcripts(tmp_path / "none.jsonl", a) == {}
  path.write_text(path.read_text() + "{not json\n")
  with pytest.raises(ValueError, match="t.jsonl:3"):
    debate.load_transcripts(path, a)


def _run(workdir, cache):
  # The ladder of the protocol and own-task sweeps (4 steps; tests/w2s/test_protocol.py), pretrained once per
  # pytest run in the shared cache (tests/conftest.py's w2s_cache).
  out = run_main(["--config=configs/debate_w2s.py:smoke", f"--workdir={workdir}",
                  "--config.ladder.total_steps=4"],
                 env={"W2S_JAX_CACHE": str(cache)})
  assert out.returncode == 0, out.stderr[-3000:]
  *lines, last = out.stdout.strip().splitlines()  # progress lines, the Markdown table, the summary's JSON
  table = [line for line in lines if line.startswith("|")]
  return {**json.loads(last), "table": "\n".join(table).strip()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, w2s_cache):
  workdir = tmp_path_factory.mktemp("debate")
  return workdir, _run(workdir, w2s_cache)


@pytest.mark.slow
def test_smoke_writes_transcripts_and_compares_both_arms(smoke):
  workdir, printed = smoke
  assert printed["transcripts"] == {"cached": 0, "generated": 96}  # 64 train + 32 test items
  rows = [json.loads(line) for line in (workdir / "transcripts.jsonl").read_text().splitlines()]
  assert len(rows) == 96 and len({r["id"] for r in rows}) == 96
  assert all(isinstance(r["for"], str) and isinstance(r["against"], str) for r in rows)
  res = json.loads((workdir / "results.json").read_text())
  (seed,) = res["per_seed"]
  ceiling = json.loads((workdir / "runs/seed0/gt-ladder-1/result.json").read_text())["accuracy"]
  assert seed["strong_ceiling"] == ceiling
  base = seed["arms"]["plain"]["weak_acc"]
  for arm in ("plain", "debate"):
    r = seed["arms"][arm]
    transfer = json.loads((workdir / f"runs/seed0/w2s-{arm}-ladder-0-to-ladder-1/result.json").read_text())
    assert r["transfer_acc"] == transfer["accuracy"]
    member0 = json.loads((workdir / f"runs/seed0/{arm}-gt-ladder-0-m0/result.json").read_text())
    assert r["weak_acc"] == member0["accuracy"]
    gap = ceiling - base
    expected = (r["transfer_acc"] - base) / gap if gap > 0 else math.nan
    assert (math.isnan(expected) and math.isnan(r["pgr"])) or r["pgr"] == pytest.approx(expected)
    # the weak labels on B are the mean of the two members' saved predictions
    probs = [np.load(workdir / f"runs/seed0/{arm}-gt-ladder-0-m{j}/other_probs.npy") for j in range(2)]
    assert len(probs[0]) == 32
    a, b = probs
    assert not np.allclose(a, b)  # two seeds, two different members
  assert (workdir / "runs/seed0/debate-gt-ladder-0-m1/result.json").exists()


@pytest.mark.slow
def test_smoke_rerun_reads_the_cached_transcripts(smoke, w2s_cache):
  workdir, first = smoke
  again = _run(workdir, w2s_cache)
  assert again["transcripts"] == {"cached": 96, "generated": 0}
  assert again["table"] == first["table"]
  assert len((workdir / "transcripts.jsonl").read_text().splitlines()) == 96
