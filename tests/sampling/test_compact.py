"""Compacted decoding (finished rows dropped from the batch; power-of-two and fine batch sizes), per-row PRNG
keys and bounded top-p.

The decode tests share one plain decode of `STOP_PROMPTS` with stop tokens (`stopped`): the compacted runs
are compared with it, and the programs it compiles (prefill, free and stopped decode) serve every test here.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.sampling.conftest import random_model
from tests.sampling.test_sampler import _np_filter, _reference_greedy
from w2s_jax.models import get_preset
from w2s_jax.sampling import STOPPED, TRUNCATED, Sampler, SamplingConfig, draw, left_pad, score
from w2s_jax.sampling.compact import bucket_sizes
from w2s_jax.sampling.tree import sample_tree_entropy

PROMPTS = [[5, 17, 301, 44, 9, 250], [3, 77], [120, 8, 8, 61], [9, 9], [400, 2, 31]]
FREE = SamplingConfig(max_new_tokens=12, temperature=0.8, top_k=40)


def test_bucket_sizes():
  assert bucket_sizes(15) == [15, 8, 4, 2]
  assert bucket_sizes(16) == [16, 8, 4, 2]
  assert bucket_sizes(5, min_rows=1) == [5, 4, 2, 1]
  assert bucket_sizes(1) == [1]


STOP_PROMPTS = PROMPTS + [[8], [77, 78, 79]]


@pytest.fixture(scope="module")
def stopped(tiny_model):
  """`STOP_PROMPTS` decoded plainly with stop tokens that rows 1, 3 and 5 draw mid-way under `FREE`.

  Rows finish at different steps, so a compacted batch shrinks.
  Returns (sampler, params, tokens, mask, plain).
  """
  graphdef, params = nnx.split(tiny_model)
  tokens, mask = left_pad(STOP_PROMPTS)
  P = tokens.shape[1]
  free = Sampler(graphdef, FREE).decode(params, Sampler(graphdef, FREE).prefill(params, tokens, mask),
                                        jax.random.key(4))
  drawn = np.asarray(free.tokens_BS)
  stops = tuple(sorted({int(drawn[r, P + f]) for r, f in ((1, 2), (3, 5), (5, 8))}))
  sampler = Sampler(graphdef, dataclasses.replace(FREE, stop_ids=stops))
  plain = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(4))
  return sampler, params, tokens, mask, plain


def test_compact_decode_samples_what_plain_decode_does(tiny_model, stopped):
  sampler, params, tokens, mask, plain = stopped
  P = tokens.shape[1]
  compact = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(4), compact=True)
  length = np.asarray(plain.length_B)
  assert len(set(length.tolist())) > 2 and STOPPED in np.asarray(plain.status_B)
  assert TRUNCATED in np.asarray(plain.status_B)
  for name in ("tokens_BS", "length_B", "status_B", "fed_B"):
    np.testing.assert_array_equal(np.asarray(getattr(compact, name)), np.asarray(getattr(plain, name)))
  # Log-probs against the no-cache forward, and the finished rows' caches are written back (a fork of
  # any row must find its prefix's keys/values): compare the filled slots with the plain decode's.
  start = np.asarray(plain.cache.start_B)
  slot = np.arange(plain.tokens_BS.shape[1])[None]
  seg = (slot >= start[:, None]) & (slot < length[:, None])
  lp, _ = score(tiny_model, compact.tokens_BS, seg, temperature=FREE.temperature)
  comp = (slot >= P) & seg
  np.testing.assert_allclose(np.asarray(compact.logprobs_BS)[comp], np.asarray(lp)[comp], atol=1e-5)
  for got, want in zip(compact.cache.k + compact.cache.v, plain.cache.k + plain.cache.v):
    for b in range(len(STOP_PROMPTS)):
      np.testing.assert_allclose(np.asarray(got)[b, :, start[b] : length[b] - 1],
                                 np.asarray(want)[b, :, start[b] : length[b] - 1], atol=1e-5)


def test_fine_compact_decode_samples_what_plain_decode_does(stopped):
  sampler, params, tokens, mask, plain = stopped
  fine = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(4), compact=True,
                        fine_buckets=True)
  assert len(set(np.asarray(plain.length_B).tolist())) > 2
  for name in ("tokens_BS", "length_B", "status_B", "fed_B"):
    np.testing.assert_array_equal(np.asarray(getattr(fine, name)), np.asarray(getattr(plain, name)))
  np.testing.assert_allclose(np.asarray(fine.logprobs_BS), np.asarray(plain.logprobs_BS), atol=1e-5)


def test_chunked_decode_with_one_key_samples_what_one_call_does(tiny_model):
  """Keys depend on (row, slot), not on the step of a call: chunks with the same key continue the draw."""
  graphdef, params = nnx.split(tiny_model)
  sampler = Sampler(graphdef, FREE)
  tokens, mask = left_pad(STOP_PROMPTS)
  one = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(9))
  state = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(9), max_steps=5)
  state = sampler.decode(params, state, jax.random.key(9))
  np.testing.assert_array_equal(np.asarray(state.tokens_BS), np.asarray(one.tokens_BS))


def test_bounded_top_p_equals_full_sort_on_peaked_and_flat_rows():
  """Over 1000 tokens: peaked rows take the top-K path, a batch with a flat row the full sort."""
  rng = np.random.default_rng(1)
  V = 1000
  peaked = rng.normal(size=(3, V)).astype(np.float32)
  peaked[np.arange(3), rng.integers(0, V, 3)] += 12.0  # ~all the mass on one token and its neighbours
  flat = rng.normal(size=(2, V)).astype(np.float32) * 0.1
  for top_p in (0.5, 0.9):
    cfg = SamplingConfig(temperature=1.0, top_p=top_p)
    probs = jax.nn.softmax(jnp.asarray(peaked), axis=-1)
    assert (jnp.sort(probs, axis=-1)[:, -draw.TOP_P_CANDIDATES:].sum(-1) >= top_p).all()
    for logits in (peaked, np.concatenate([peaked, flat])):
      got = np.isfinite(np.asarray(jax.jit(draw.filter_logits, static_argnums=1)(jnp.asarray(logits), cfg)))
      np.testing.assert_array_equal(got, _np_filter(logits.astype(np.float64), 1.0, None, top_p, None))


def _same_trees(tiny_model, option: str):
  """Two entropy trees of the same prompts and key, with `option` True and False (both with the defaults
  otherwise: compact=True, fine_buckets=True); asserts they are the same tree and returns them. The True run
  is the same call in both tests below, so its programs compile once."""
  graphdef, params = nnx.split(tiny_model)
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=10, temperature=1.0, stop_ids=(7, 11, 13)))
  tokens, mask = left_pad(PROMPTS[:2])
  kw = dict(n_roots=2, n_iters=1, top_n=3, n_forks=2)
  a, b = (sample_tree_entropy(sampler, params, tokens, mask, jax.random.key(5), **{option: flag}, **kw)
          for flag in (True, False))
  assert len(set(a.completion_mask_LS.sum(1).tolist())) > 1  # leaves end at different lengths
  for name in ("parent_N", "start_N", "end_N", "tokens_LS", "status_L", "token_node_LS"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  np.testing.assert_allclose(a.logprobs_LS, b.logprobs_LS, atol=1e-5)
  return a, b


def test_trees_are_the_same_with_and_without_compaction(tiny_model):
  a, b = _same_trees(tiny_model, "compact")
  assert a.forward_tokens == b.forward_tokens


def test_trees_are_the_same_with_fine_and_power_of_two_buckets(tiny_model):
  a, _ = _same_trees(tiny_model, "fine_buckets")
  lp, _ = score(tiny_model, a.tokens_LS, a.prompt_mask_LS | a.completion_mask_LS, temperature=1.0)
  comp = a.completion_mask_LS
  np.testing.assert_allclose(a.logprobs_LS[comp], np.asarray(lp)[comp], atol=1e-5)


def test_fused_decode_weights_with_qkv_bias_match_the_full_forward():
  """The fused q|k|v projection adds Qwen2's biases like the model does: greedy = argmax of the forward."""
  model = random_model(get_preset("tiny", qkv_bias=True), seed=4)
  graphdef, params = nnx.split(model)
  tokens, mask = left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=6, temperature=0.0)
  out = Sampler(graphdef, cfg)(params, tokens, mask, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out.completions_BN), _reference_greedy(model, PROMPTS, 6))
  unfused = Sampler(graphdef, cfg, fuse=False)(params, tokens, mask, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(unfused.tokens_BS), np.asarray(out.tokens_BS))
  np.testing.assert_allclose(np.asarray(unfused.logprobs_BS), np.asarray(out.logprobs_BS), atol=1e-6)
