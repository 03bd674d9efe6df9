"""The state the decode loop carries (`DecodeState`) and the row status codes.

Its own module so that the loop (`sampler.py`) and the compaction around it (`compact.py`) both build on it
without importing each other.
"""

from __future__ import annotations

import flax
import jax

from w2s_jax.models import kv_cache

# Row status codes (`DecodeState.status_B`).
RUNNING, STOPPED, TRUNCATED, PAUSED = 0, 1, 2, 3


@flax.struct.dataclass
class DecodeState:
  """Everything the decode loop carries; all arrays have the batch axis first.

  Attributes:
    cache: the KV cache (holds slots [start_B, length_B - 1) of each row).
    tokens_BS: int32 token buffer: left-padded prompt, then generated tokens, then `pad_id`.
    logprobs_BS: float32 log-prob of each generated token (0 elsewhere).
    entropies_BS: float32 entropy of the distribution each generated token was drawn from.
    length_B: int32 number of filled slots; slot length_B - 1 is the pending token.
    status_B: int32 RUNNING, STOPPED (drew a stop token), TRUNCATED (buffer full) or PAUSED (drew a
      pause token; `resume` sets it RUNNING again).
    fed_B: int32 real tokens this row has run through the model (prefill + decode), for accounting.
  """

  cache: kv_cache.KVCache
  tokens_BS: jax.Array
  logprobs_BS: jax.Array
  entropies_BS: jax.Array
  length_B: jax.Array
  status_B: jax.Array
  fed_B: jax.Array
