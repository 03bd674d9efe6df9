"""RL speed paths that must not change what is learned: compacted rollouts and the train step's guard."""

import dataclasses

import jax
import numpy as np
from flax import nnx

from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.rollout import RewardConfig, encode_prompts, sample_groups
from w2s_jax.rl.tree_rollout import KeepStateSampler
from w2s_jax.sampling import Sampler, SamplingConfig, score


def _setup():
  tok = ByteTokenizer()
  model = Transformer(get_preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(0))
  prompts = encode_prompts(reasoning_problems("chain_sum", "train", size=3, seed=0), tok, 112)
  return tok, model, prompts


def test_compact_rollout_equals_the_plain_one():
  """`sample_groups(compact=True)` drops finished rows mid-draw; tokens, masks, rewards and statuses equal
  the plain draw's, log-probs equal the no-cache forward's (`score`), also through `KeepStateSampler` and
  with a larger `compact_min_rows`."""
  tok, model, prompts = _setup()
  graphdef, params = nnx.split(model)
  cfg = SamplingConfig(max_new_tokens=24, temperature=1.0, stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
  key, G = jax.random.key(3), 4
  free = sample_groups(Sampler(graphdef, cfg), params, prompts, G, key, tok, RewardConfig(), compact=False)
  P = prompts.tokens_BP.shape[1]
  # Stop tokens that some rows draw early: rows finish at different steps, so the batch shrinks.
  stops = tuple(int(free.tokens_RS[r, P + f]) for r, f in ((1, 2), (5, 4), (8, 3), (10, 6)))
  cfg = dataclasses.replace(cfg, stop_ids=stops)
  sampler = Sampler(graphdef, cfg)
  plain = sample_groups(sampler, params, prompts, G, key, tok, RewardConfig(), compact=False)
  assert len(set(plain.lengths_R.tolist())) > 3 and plain.truncated_R.any() and not plain.truncated_R.all()
  # KeepStateSampler's sampler shrinks the batch only down to 4 rows (12, 8, 4): the same draw.
  for draw_with in (sampler, KeepStateSampler(Sampler(graphdef, cfg, compact_min_rows=4))):
    fast = sample_groups(draw_with, params, prompts, G, key, tok, RewardConfig(), compact=True)
    for name in ("tokens_RS", "mask_RS", "completion_mask_RN", "truncated_R", "rewards_R", "correct_R"):
      np.testing.assert_array_equal(getattr(fast, name), getattr(plain, name), err_msg=name)
    assert fast.texts == plain.texts
    lp, _ = score(model, fast.tokens_RS, fast.mask_RS, temperature=1.0)
    cmask = fast.completion_mask_RN
    np.testing.assert_allclose(fast.sampler_logp_RN[cmask], np.asarray(lp)[:, P:][cmask], atol=1e-5)
    np.testing.assert_array_equal(fast.sampler_logp_RN[~cmask], 0.0)
