"""The SFT data pipeline over reasoning tasks: exact resume from a saved iterator state, length policy."""

import json

import numpy as np
import pytest

from w2s_jax.data import packing, pipeline, sft_sources
from w2s_jax.data.tokenizers import ByteTokenizer


def _data(seed=0, overlong="drop"):
  cfg = {"train_size": 120, "eval_size": 16}
  d = type("D", (dict,), {"get": lambda self, k, default=None: dict.get(self, k, default)})(cfg)
  train, _ = sft_sources.SFT_CORPORA["gcd"]("train", d)
  evals, _ = sft_sources.SFT_CORPORA["gcd"]("eval", d)
  return pipeline.token_data(train, evals, ByteTokenizer(), seq_len=256, batch_size=4, eval_batches=2,
                             seed=seed, overlong=overlong)


def test_restored_state_gives_exactly_the_next_batch(tmp_path):
  uninterrupted = _data()
  reference = [uninterrupted.train[i] for i in range(60)]  # past one epoch: reshuffled after it
  first = _data()
  for i in range(23):
    assert all(np.array_equal(first.train[i][k], reference[i][k]) for k in packing.FIELDS)
  (tmp_path / "state.json").write_text(json.dumps({"next_batch": 23}))
  del first  # a new process: rebuild everything from the config, then restore the state
  state = json.loads((tmp_path / "state.json").read_text())
  resumed = _data()
  for i in range(state["next_batch"], 60):
    for k in packing.FIELDS:
      np.testing.assert_array_equal(resumed.train[i][k], reference[i][k])


def test_different_seed_shuffles_differently():
  a, b = _data(seed=0), _data(seed=1)
  assert not np.array_equal(a.train[0]["inputs"], b.train[0]["inputs"])


def test_batches_hold_whole_worked_solutions_with_masks():
  data = _data()
  tok = ByteTokenizer()
  batch = data.train[0]
  row, seg = batch["inputs"][0], batch["segment_ids"][0]
  first = tok.decode(list(row[(seg == 1)]))
  assert first.startswith("Question: Find the Greatest Common Divisor") and "\nSolution:\n" in first
  masked = tok.decode(list(batch["targets"][0][(seg == 1) & (batch["loss_mask"][0] == 1)]))
  assert masked.split("\n")[-1].startswith("Answer: ") and "\nSolution:\n" not in masked


@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_overlong_examples_are_dropped_or_truncated_and_counted(overlong):
  tok = ByteTokenizer()
  pairs = [("p" * 10, "r" * 10), ("q" * 300, "s" * 10), ("t", "u")]
  data = pipeline.token_data(pairs, pairs, tok, seq_len=64, batch_size=1, eval_batches=1, seed=0,
                             overlong=overlong)
  stats = data.stats["train"]
  assert (stats.examples, stats.dropped, stats.truncated) == ((3, 1, 0) if overlong == "drop" else (3, 0, 1))
  # dropped: 21 + 3 tokens share one row; truncated: the long one fills a whole 64-token row between them
  assert stats.rows == (1 if overlong == "drop" else 3)
  with pytest.raises(ValueError, match="overlong"):
    packing.pack([], 8, overlong="skip")


def test_sft_corpus_can_come_from_the_tfds_build(tmp_path):
  from_tfds = sft_sources.reasoning_problems("gcd", "train", size=40, data_dir=str(tmp_path))
  assert len(from_tfds) == 40
  generated = {p.id: p for p in sft_sources.reasoning_problems("gcd", "train", size=5000)}
  assert all(generated[p.id] == p for p in from_tfds)  # the builder writes exactly what generation gives
  held_out = sft_sources.reasoning_problems("gcd", "eval", size=10, data_dir=str(tmp_path))
  assert not {p.prompt for p in held_out} & {p.prompt for p in generated.values()}


def test_chunk_lines_keeps_all_text_in_bounded_pieces():
  text = "ab\ncdef\n" + "x" * 9 + "\nyz"
  chunks = sft_sources.chunk_lines(text, 4)
  assert chunks == ["ab\n", "cdef", "\n", "xxxx", "xxxx", "x\nyz"]
  assert "".join(chunks) == text and max(map(len, chunks)) <= 4


def test_pretrain_corpus_splits_documents_and_trains_every_token():
  d = type("D", (dict,), {"get": lambda self, k, default=None: dict.get(self, k, default)})(
    {"problems_per_task": 10, "qa_per_task": 3, "eval_frac": 0.2, "max_chars": 300})
  train, info = sft_sources.SFT_CORPORA["pretrain"]("train", d)
  held, held_info = sft_sources.SFT_CORPORA["pretrain"]("eval", d)
  assert info["documents"] + held_info["documents"] == 4 * 10 + 18 * 3 + 79  # 79 Python reference topics
  assert all(p == "" and 0 < len(r) <= 300 for p, r in train + held)
  assert len(train) > 3 * len(held) > 0
  assert not {r for _, r in held} & {r for _, r in train}  # repeated reference paragraphs stay in train
  assert held_info["dropped_seen_in_train"] > 0
