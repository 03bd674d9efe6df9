"""One-row decoding (B = 1, the tree's root chains) and the finer compaction batch sizes, against references:
the no-cache forward's argmax, `score`, the same row decoded in a batch, and hand-written batch sizes.
(Decoding and tree sampling with fine batch sizes are compared with plain decoding in test_compact.py.)"""


import jax
import numpy as np
from flax import nnx

from tests.sampling.test_sampler import _reference_greedy
from w2s_jax.models import kv_cache
from w2s_jax.sampling import TRUNCATED, Sampler, SamplingConfig, left_pad, score
from w2s_jax.sampling.compact import bucket_sizes
from w2s_jax.sampling.sampler import decode_windows

PROMPT = [5, 17, 301, 44, 9, 250]
PROMPTS = [PROMPT, [3, 77], [120, 8, 8, 61]]


def test_one_row_cache_form():
  cache = kv_cache.KVCache(k=(np.zeros((1, 2, 7, 4)),), v=(np.ones((1, 2, 7, 4)),), start_B=np.zeros(1))
  row = kv_cache.one_row(cache)
  assert row.is_one_row and row.k[0].shape == (2, 7, 4) and row.size == 7
  assert kv_cache.batched(row).k[0].shape == (1, 2, 7, 4) and not cache.is_one_row
  assert kv_cache.window(row, 3).k[0].shape == (2, 3, 4)
  two = cache.replace(k=(np.zeros((2, 2, 7, 4)),))
  try:
    kv_cache.one_row(two)
  except ValueError as e:
    assert "one row" in str(e)
  else:
    raise AssertionError("one_row accepted a cache of two rows")


def test_one_row_greedy_equals_argmax_of_full_forward(tiny_model):
  """B = 1 with one decode phase (short) and with several (long enough for windows)."""
  graphdef, params = nnx.split(tiny_model)
  tokens, mask = left_pad([PROMPT])
  for n_new in (9, 70):
    out = Sampler(graphdef, SamplingConfig(max_new_tokens=n_new, temperature=0.0))(
      params, tokens, mask, jax.random.key(0)
    )
    assert (len(decode_windows(len(PROMPT) + n_new, len(PROMPT))) > 1) == (n_new == 70)
    ref = _reference_greedy(tiny_model, [PROMPT], n_new)
    np.testing.assert_array_equal(np.asarray(out.completions_BN), ref)
    assert np.asarray(out.status_B).tolist() == [TRUNCATED]
    assert out.prompt_mask_BS.shape == (1, len(PROMPT) + n_new)


def test_one_row_samples_what_its_row_in_a_batch_samples_and_logprobs_equal_score(tiny_model):
  """Row 0 alone draws with the key of row 0 in a batch: same tokens; log-probs equal `score`'s."""
  graphdef, params = nnx.split(tiny_model)
  cfg = SamplingConfig(max_new_tokens=70, temperature=0.8, top_k=40)
  sampler = Sampler(graphdef, cfg)
  tokens, mask = left_pad(PROMPTS)
  batch = sampler(params, tokens, mask, jax.random.key(2))
  one = sampler(params, tokens[:1], mask[:1], jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(one.tokens_BS)[0], np.asarray(batch.tokens_BS)[0])
  lp, ent = score(tiny_model, one.tokens_BS, one.mask_BS, temperature=cfg.temperature)
  comp = np.asarray(one.completion_mask_BS)
  assert comp.sum() == 70
  np.testing.assert_allclose(np.asarray(one.logprobs_BS)[comp], np.asarray(lp)[comp], atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(one.entropies_BS)[comp], np.asarray(ent)[comp], atol=1e-5, rtol=0)


def test_one_row_chunked_decode_keeps_the_cache(tiny_model):
  """Decoding B = 1 in chunks (the cache leaves and re-enters the one-row form) = one call."""
  graphdef, params = nnx.split(tiny_model)
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=12, temperature=0.8, top_k=40))
  tokens, mask = left_pad([PROMPT])
  key = jax.random.key(6)
  whole = sampler.decode(params, sampler.prefill(params, tokens, mask), key)
  state = sampler.decode(params, sampler.prefill(params, tokens, mask), key, max_steps=5)
  assert state.cache.k[0].shape[0] == 1 and not state.cache.is_one_row
  state = sampler.decode(params, state, key)
  np.testing.assert_array_equal(np.asarray(state.tokens_BS), np.asarray(whole.tokens_BS))
  np.testing.assert_allclose(np.asarray(state.logprobs_BS), np.asarray(whole.logprobs_BS), atol=1e-6)


def test_fine_bucket_sizes():
  assert bucket_sizes(15, fine=True) == [15, 12, 8, 6, 4, 3, 2]
  assert bucket_sizes(16, fine=True) == [16, 12, 8, 6, 4, 3, 2]
  assert bucket_sizes(64, fine=True) == [64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2]
  assert bucket_sizes(5, min_rows=1, fine=True) == [5, 4, 3, 2, 1]
  assert bucket_sizes(7, min_rows=4, fine=True) == [7, 6, 4]
  assert bucket_sizes(1, fine=True) == [1]
