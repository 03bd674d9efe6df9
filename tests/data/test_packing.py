"""Packing, the byte tokenizer and the batch stream."""

import numpy as np
import pytest

from w2s_jax.data import packing, pipeline, text
from w2s_jax.data.tokenizers import ByteTokenizer


def test_byte_tokenizer_round_trips_unicode():
  tok = ByteTokenizer()
  s = "naïve café — 漢字 🙂"
  ids = tok.encode(s)
  assert min(ids) >= tok.offset and max(ids) < tok.vocab_size
  assert tok.decode(ids) == s


def test_example_arrays_mask_only_response_and_eos():
  inputs, targets, mask = packing.example_arrays([10, 11], [20, 21, 22], bos_id=1, eos_id=2)
  np.testing.assert_array_equal(inputs, [1, 10, 11, 20, 21, 22])
  np.testing.assert_array_equal(targets, [10, 11, 20, 21, 22, 2])
  np.testing.assert_array_equal(mask, [0, 0, 1, 1, 1, 1])


def test_pack_rows_segments_positions():
  ex = [packing.example_arrays([5] * p, [6] * r, bos_id=1, eos_id=2) for p, r in [(1, 2), (2, 1), (3, 4)]]
  rows, stats = packing.pack(ex, seq_len=8)
  # lengths 4, 4 fill row 0 exactly; the third (8 tokens) gets its own row.
  np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 2], [1] * 8])
  np.testing.assert_array_equal(rows["positions"][0], [0, 1, 2, 3, 0, 1, 2, 3])
  np.testing.assert_array_equal(rows["inputs"][0], [1, 5, 6, 6, 1, 5, 5, 6])
  np.testing.assert_array_equal(rows["loss_mask"][0], [0, 1, 1, 1, 0, 0, 1, 1])
  assert (stats.examples, stats.truncated, stats.rows) == (3, 0, 2)
  assert stats.tokens == rows["loss_mask"].sum()


def test_pack_truncates_and_counts_long_examples_and_pads():
  ex = [packing.example_arrays([5] * 10, [6] * 10, bos_id=1, eos_id=2),
        packing.example_arrays([], [7], bos_id=1, eos_id=2)]
  rows, stats = packing.pack(ex, seq_len=8, pad_id=0)
  assert stats.truncated == 1
  np.testing.assert_array_equal(rows["segment_ids"][1], [1, 1, 0, 0, 0, 0, 0, 0])
  assert rows["loss_mask"][1, 2:].sum() == 0


def test_stream_is_random_access_and_deterministic():
  tok = ByteTokenizer()
  pairs = text.python_reference_examples("train", max_chars=120)[:200]
  a = pipeline.token_data(pairs, pairs[:20], tok, seq_len=64, batch_size=4, eval_batches=2, seed=3)
  b = pipeline.token_data(pairs, pairs[:20], tok, seq_len=64, batch_size=4, eval_batches=2, seed=3)
  for i in (0, 7, 1000):
    for k in packing.FIELDS:
      np.testing.assert_array_equal(a.train[i][k], b.train[i][k])
  assert not np.array_equal(a.train[0]["inputs"], a.train[1]["inputs"])


def test_python_reference_splits_are_disjoint_and_nonempty():
  train = text.python_reference_examples("train")
  held = text.python_reference_examples("eval", eval_frac=0.1)
  assert len(train) > 1000 and len(held) > 20
  assert not {p for p, _ in held} & {p for p, _ in text.python_reference_examples("train", eval_frac=0.1)}
  with pytest.raises(ValueError, match="split"):
    text.python_reference_examples("test")
