"""The KV-cache sampler against independent references: the no-cache forward, `score`, NumPy filters."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax import sharding
from w2s_jax.sampling import (
  STOPPED,
  TRUNCATED,
  Sampler,
  SamplingConfig,
  left_pad,
  score,
)
from w2s_jax.sampling.sampler import decode_windows, filter_logits, sample_token

PROMPTS = [[5, 17, 301, 44, 9, 250], [3, 77], [120, 8, 8, 61]]
N_NEW = 9


@functools.cache
def _samplers(graphdef, cfg):
  return Sampler(graphdef, cfg)


def _run(model, cfg, key=0, prompts=PROMPTS):
  graphdef, params = nnx.split(model)
  tokens, mask = left_pad(prompts)
  return _samplers(graphdef, cfg)(params, tokens, mask, jax.random.key(key))


@jax.jit
def _last_logits(graphdef, params, tokens_BL, length_B):
  """No-cache forward of right-padded rows; logits at each row's last real token."""
  model = nnx.merge(graphdef, params)
  mask = (jnp.arange(tokens_BL.shape[1])[None] < length_B[:, None]).astype(jnp.int32)
  logits = model(tokens_BL, segment_ids_BL=mask)
  return jnp.take_along_axis(logits, (length_B - 1)[:, None, None], axis=1)[:, 0]


def _reference_greedy(model, prompts, n_new):
  """Token-by-token argmax of the full forward pass over the unpadded prompt + tokens so far."""
  graphdef, params = nnx.split(model)
  L = max(map(len, prompts)) + n_new
  seqs = [list(p) for p in prompts]
  for _ in range(n_new):
    buf = np.zeros((len(seqs), L), np.int32)
    for i, s in enumerate(seqs):
      buf[i, : len(s)] = s
    lengths = np.array([len(s) for s in seqs], np.int32)
    nxt = np.asarray(jnp.argmax(_last_logits(graphdef, params, buf, lengths), axis=-1))
    for i, s in enumerate(seqs):
      s.append(int(nxt[i]))
  return np.array([s[len(p) :] for s, p in zip(seqs, prompts)])


@pytest.mark.parametrize("which", ["tiny_model", "gemma_model"])
def test_greedy_equals_argmax_of_full_forward(which, request):
  model = request.getfixturevalue(which)
  out = _run(model, SamplingConfig(max_new_tokens=N_NEW, temperature=0.0))
  np.testing.assert_array_equal(np.asarray(out.completions_BN), _reference_greedy(model, PROMPTS, N_NEW))
  assert (np.asarray(out.status_B) == TRUNCATED).all()
  assert np.asarray(out.completion_mask_BS).sum(1).tolist() == [N_NEW] * 3
  P = max(map(len, PROMPTS))
  np.testing.assert_array_equal(np.asarray(out.prompt_mask_BS)[:, :P], left_pad(PROMPTS)[1])


# Top-p sorts the vocabulary (slow to compile); `filter_logits` is checked on its own below.
SAMPLED = SamplingConfig(max_new_tokens=N_NEW, temperature=0.7, top_k=50, min_p=0.01)


@pytest.mark.parametrize("which", ["tiny_model", "gemma_model"])
def test_sampled_logprobs_equal_score(which, request):
  model = request.getfixturevalue(which)
  out = _run(model, SAMPLED, key=1)
  lp, ent = score(model, out.tokens_BS, out.mask_BS, temperature=SAMPLED.temperature)
  comp = np.asarray(out.completion_mask_BS)
  assert comp.sum() == 3 * N_NEW
  np.testing.assert_allclose(np.asarray(out.logprobs_BS)[comp], np.asarray(lp)[comp], atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(out.entropies_BS)[comp], np.asarray(ent)[comp], atol=1e-5, rtol=0)
  assert (np.asarray(out.logprobs_BS)[~comp] == 0).all()
  assert (np.asarray(out.logprobs_BS)[comp] < 0).all()


def test_top_k_1_equals_greedy(tiny_model):
  greedy = _run(tiny_model, SamplingConfig(max_new_tokens=N_NEW, temperature=0.0))
  top1 = _run(tiny_model, SamplingConfig(max_new_tokens=N_NEW, temperature=1.0, top_k=1), key=5)
  np.testing.assert_array_equal(np.asarray(top1.tokens_BS), np.asarray(greedy.tokens_BS))
  np.testing.assert_allclose(np.asarray(top1.logprobs_BS), np.asarray(greedy.logprobs_BS), atol=1e-6)


def test_same_key_same_output(tiny_model):
  a, b = _run(tiny_model, SAMPLED, key=7), _run(tiny_model, SAMPLED, key=7)
  c = _run(tiny_model, SAMPLED, key=8)
  np.testing.assert_array_equal(np.asarray(a.tokens_BS), np.asarray(b.tokens_BS))
  np.testing.assert_array_equal(np.asarray(a.logprobs_BS), np.asarray(b.logprobs_BS))
  assert (np.asarray(a.tokens_BS) != np.asarray(c.tokens_BS)).any()


def test_stop_token_ends_row_and_masks_rest(tiny_model):
  base = np.asarray(_run(tiny_model, SamplingConfig(max_new_tokens=N_NEW, temperature=0.0)).completions_BN)
  stop = int(base[0, 2])  # row 0 draws it at step 2 (or earlier)
  first = [int(np.flatnonzero(r == stop)[0]) if (r == stop).any() else None for r in base]
  cfg = SamplingConfig(max_new_tokens=N_NEW, temperature=0.0, stop_ids=(999, stop), pad_id=511)
  out = _run(tiny_model, cfg)
  comp, status = np.asarray(out.completions_BN), np.asarray(out.status_B)
  cmask = np.asarray(out.completion_mask_BS)[:, -N_NEW:]
  for i, f in enumerate(first):
    if f is None:
      assert status[i] == TRUNCATED
      np.testing.assert_array_equal(comp[i], base[i])
      continue
    assert status[i] == STOPPED
    np.testing.assert_array_equal(comp[i, : f + 1], base[i, : f + 1])  # stop token kept
    assert (comp[i, f + 1 :] == 511).all()
    assert cmask[i].tolist() == [True] * (f + 1) + [False] * (N_NEW - f - 1)
    assert (np.asarray(out.logprobs_BS)[i, -N_NEW:][f + 1 :] == 0).all()
  assert status[0] == STOPPED


def test_prefill_then_chunked_decode_equals_one_call_and_donates(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  sampler = _samplers(graphdef, SAMPLED)
  tokens, mask = left_pad(PROMPTS)
  key = jax.random.key(3)
  one = sampler(params, tokens, mask, key)
  state = sampler.prefill(params, tokens, mask)
  # Chunks restart the step counter, so each chunk gets its own key; compare with a single decode call.
  whole = sampler.decode(params, sampler.prefill(params, tokens, mask), key)
  np.testing.assert_array_equal(np.asarray(whole.tokens_BS), np.asarray(one.tokens_BS))
  old = state
  state = sampler.decode(params, state, key, max_steps=4)
  assert old.cache.k[0].is_deleted() and old.tokens_BS.is_deleted()  # donated: updated in place
  assert np.asarray(state.length_B).tolist() == [len(PROMPTS[0]) + 4] * 3
  np.testing.assert_array_equal(np.asarray(state.tokens_BS)[:, :10], np.asarray(one.tokens_BS)[:, :10])
  state = sampler.decode(params, state, jax.random.key(4))
  assert np.asarray(state.length_B).tolist() == [len(PROMPTS[0]) + N_NEW] * 3


def test_decode_phases_do_not_change_the_output(tiny_model):
  """A cache long enough for several decode phases (windows) samples what one full-cache phase does."""
  graphdef, params = nnx.split(tiny_model)
  n_new = 70
  tokens, mask = left_pad(PROMPTS)
  S = tokens.shape[1] + n_new
  assert len(decode_windows(S, tokens.shape[1])) > 1 and len(decode_windows(S)) > 1
  free = SamplingConfig(max_new_tokens=n_new, temperature=0.7, top_k=50)
  one = Sampler(graphdef, free)
  full = one.decode(params, one.prefill(params, tokens, mask), jax.random.key(1), min_length=S - 1)
  # A stop token that row 0 draws mid-way: rows end in different phases.
  stop = int(np.asarray(full.tokens_BS)[0, tokens.shape[1] + 40])
  cfg = dataclasses.replace(free, stop_ids=(stop,))
  sampler = Sampler(graphdef, cfg)
  ref = sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(1), min_length=S - 1)
  for out in (
    sampler(params, tokens, mask, jax.random.key(1)),
    sampler.decode(params, sampler.prefill(params, tokens, mask), jax.random.key(1)),
  ):
    np.testing.assert_array_equal(np.asarray(out.tokens_BS), np.asarray(ref.tokens_BS))
    np.testing.assert_array_equal(np.asarray(out.status_B), np.asarray(ref.status_B))
    # Tokens are compared exactly above. Log-probs come from attention over cache windows of different
    # lengths, so float32 softmax/log-sum-exp reductions run in a different order: a few ulp of |log p| ≤ ~10
    # (eps32·10 ≈ 1.2e-6; 1.4e-6 was seen on some x86-64 CPUs). 1e-5 bounds that; a wrong mask or position
    # changes log-probs by ≥ 1e-2.
    np.testing.assert_allclose(np.asarray(out.logprobs_BS), np.asarray(ref.logprobs_BS), atol=1e-5, rtol=0)
  assert STOPPED in np.asarray(ref.status_B).tolist()


def test_sharded_sampler_matches_single_device(tiny_model):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.get_rules("fsdp_tp")
  graphdef, params = nnx.split(tiny_model)
  params_sharded = jax.device_put(params, sharding.tree_shardings(params, mesh, rules))
  prompts = PROMPTS + [[1, 2, 3]]  # 4 rows over data x fsdp
  tokens, mask = left_pad(prompts)
  ref = Sampler(graphdef, SAMPLED)(params, tokens, mask, jax.random.key(2))
  out = Sampler(graphdef, SAMPLED, mesh=mesh, rules=rules)(params_sharded, tokens, mask, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(out.tokens_BS), np.asarray(ref.tokens_BS))
  # tensor-parallel matmuls sum in another order: equal tokens, log-probs to float noise
  np.testing.assert_allclose(np.asarray(out.logprobs_BS), np.asarray(ref.logprobs_BS), atol=1e-4)
  assert out.tokens_BS.sharding.spec[0] == ("data", "fsdp")


def test_left_pad_and_validation():
  tokens, mask = left_pad([[4, 5], [6]], pad_id=9)
  np.testing.assert_array_equal(tokens, [[4, 5], [9, 6]])
  np.testing.assert_array_equal(mask, [[True, True], [False, True]])
  sampler = Sampler.__new__(Sampler)  # validation happens before any model is touched
  with pytest.raises(ValueError, match="left-padded"):
    Sampler.__call__(sampler, None, tokens, np.array([[True, True], [True, False]]), None)
  with pytest.raises(ValueError, match="left-padded"):
    Sampler.__call__(sampler, None, tokens, np.array([[True, True], [False, False]]), None)


def _np_filter(logits, temperature, top_k, top_p, min_p):
  """Reference: the allowed set of HF's TopK -> TopP -> MinP warpers, written with NumPy sorts."""
  x = logits / temperature
  keep = np.ones_like(x, bool)
  for b in range(x.shape[0]):
    order = np.argsort(-x[b], kind="stable")
    if top_k is not None:
      keep[b, order[top_k:]] = False
    if top_p is not None:
      p = np.exp(x[b] - x[b].max()) * keep[b]
      p = p / p.sum()
      cum = 0.0
      for j, t in enumerate(order):
        if j > 0 and cum >= top_p:
          keep[b, t] = False
        cum += p[t]
    if min_p is not None:
      p = np.exp(x[b] - x[b].max()) * keep[b]
      p = p / p.sum()
      keep[b] &= p >= min_p * p.max()
  return keep


@pytest.mark.parametrize(
  "top_k, top_p, min_p", [(5, None, None), (None, 0.8, None), (None, None, 0.2), (20, 0.9, 0.05)]
)
def test_filters_match_numpy_and_draws_follow_renormalised_probs(top_k, top_p, min_p):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 40)).astype(np.float32) * 2.0
  cfg = SamplingConfig(temperature=0.8, top_k=top_k, top_p=top_p, min_p=min_p)
  got = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), cfg)))
  want = _np_filter(logits.astype(np.float64), 0.8, top_k, top_p, min_p)
  np.testing.assert_array_equal(got, want)
  n = 4000
  keys = jax.random.split(jax.random.key(0), n)
  draws = np.asarray(jax.vmap(lambda k: sample_token(k, jnp.asarray(logits), cfg)[0])(keys))  # [n, 3]
  for b in range(3):
    p = np.exp(logits[b] / 0.8 - (logits[b] / 0.8).max()) * want[b]
    p /= p.sum()
    freq = np.bincount(draws[:, b], minlength=40) / n
    assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(want[b]))
    np.testing.assert_allclose(freq, p, atol=0.035)
