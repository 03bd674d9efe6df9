"""PRM Monte Carlo completions (`prm.mc.prefix_completions`) against an independent re-prefill of each prefix.

With greedy decoding both are deterministic, so equality of every continuation (through the budget cut)
checks the prefix tokens, positions and the per-prefix budget. The reference: prompt + prefix left-padded
into P + N slots, N new tokens, cut to N − len(prefix). (Also the check a cache-forking version must pass.)
"""

import jax
import numpy as np
import pytest
from flax import nnx

from tests.sampling.conftest import random_model
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models import get_preset
from w2s_jax.prm.labels import step_end_indices
from w2s_jax.prm.mc import Solutions, prefix_completions
from w2s_jax.rl.rollout import decode_completions
from w2s_jax.sampling import Sampler, SamplingConfig, left_pad

P, N, K = 48, 20, 2


@pytest.fixture(scope="module")
def setup():
  tok = ByteTokenizer()
  model = random_model(get_preset("tiny", vocab_size=512))
  graphdef, params = nnx.split(model)
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=N, temperature=0.0, stop_ids=(tok.eos_id,),
                                             pad_id=tok.pad_id))
  problems = reasoning_problems("chain_sum", "train", size=3, seed=0)
  nl = tok.encode("\n")[0]
  prompts = [[tok.bos_id, *tok.encode(f"Q: {p.prompt[:30]}\n")] for p in problems]
  comps = [tok.encode("1+2=3\n3+4=7\n7"), tok.encode("ab\nc\nd\ne\nf")[:N], tok.encode("x\n\nyz\n12")]
  assert all(len(p) <= P for p in prompts) and all(len(c) <= N for c in comps)
  sols = Solutions(problems=problems, prompt_ids=prompts, completion_ids=comps,
                   step_ends=[step_end_indices(c, [nl]) for c in comps], texts=[""] * 3, answers=[None] * 3,
                   correct_R=np.zeros(3, np.float32))
  return tok, sampler, params, sols


def _reference(tok, sampler, params, sols, queries):
  texts = []
  for r, i in queries:
    cut = int(sols.step_ends[r][i]) + 1
    prefix = sols.prompt_ids[r] + sols.completion_ids[r][:cut]
    tokens, mask = left_pad([prefix], pad_id=tok.pad_id, length=P + N)
    out = sampler(params, tokens, mask, jax.random.key(0))
    comp_N = np.asarray(out.tokens_BS)[:, P + N:]
    keep_N = np.asarray(out.completion_mask_BS)[:, P + N:] & (np.arange(N) < N - cut)[None]
    texts.append(decode_completions(comp_N, keep_N, tok)[0])
  return texts


def test_completions_equal_a_fresh_prefill_of_the_prefix(setup):
  tok, sampler, params, sols = setup
  # Several prefixes per solution, across chunks of 3 queries (the last chunk is short).
  queries = [(0, 0), (0, 1), (1, 0), (1, 3), (2, 1), (2, 2), (1, 2)]
  assert all(i < len(sols.step_ends[r]) - 1 for r, i in queries)
  correct, texts = prefix_completions(sampler, params, sols, queries, K, jax.random.key(5), tok,
                                      prompt_len=P, max_new_tokens=N, chunk_prompts=3)
  want = _reference(tok, sampler, params, sols, queries)
  assert correct.shape == (len(queries), K) and len(texts) == len(queries)
  for q, (r, i) in enumerate(queries):
    assert texts[q] == [want[q]] * K, (q, texts[q], want[q])
    cut = int(sols.step_ends[r][i]) + 1
    prefix = decode_completions(np.asarray([sols.completion_ids[r][:cut]]), np.ones((1, cut), bool), tok)[0]
    assert correct[q].tolist() == [float(reasoning.score(sols.problems[r], prefix + want[q]) >= 1.0)] * K
  assert any(len(t) > 0 for t in want)  # the continuations are not all empty


def test_whole_solution_query_is_refused(setup):
  tok, sampler, params, sols = setup
  last = len(sols.step_ends[0]) - 1
  with pytest.raises(ValueError, match="whole solution"):
    prefix_completions(sampler, params, sols, [(0, last)], K, jax.random.key(0), tok, prompt_len=P,
                       max_new_tokens=N, chunk_prompts=2)
