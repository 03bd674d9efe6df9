"""Per-token log-probs and entropies of given sequences under a model (reference / old-policy log-probs).

This is the plain no-cache forward (`Transformer.__call__`), independent of the sampler's cache path,
so `score` on a sampler's finished sequences reproduces the sampler's log-probs (tests check 1e-5).

Legend: B rows, L length, V vocab.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models.transformer import Transformer


def token_positions(mask_BL: jax.Array) -> jax.Array:
  """Positions that count real tokens (0 at the first real token; padding repeats a neighbour) [B, L]."""
  return jnp.maximum(jnp.cumsum(mask_BL.astype(jnp.int32), axis=1) - 1, 0)


def score_fn(
  model: Transformer, tokens_BL: jax.Array, mask_BL: jax.Array, *, temperature: float = 1.0,
  num_last: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Log-prob of each token given the real tokens before it, and the entropy it was predicted with.

  Args:
    model: the decoder (call inside jit, or use `score`).
    tokens_BL: int token ids.
    mask_BL: bool/int, real tokens, contiguous in each row (left and/or right padding); positions
      count real tokens.
    temperature: logits are divided by it (use the sampling temperature for old-policy log-probs).
    num_last: N, to score only the last N tokens (e.g. completions after left-padded prompts): only
      the N slots that predict them are projected to the vocabulary. None scores every token.

  Returns:
    (logprobs_BL, entropies_BL) float32 ([B, N] with `num_last`); entry t scores token t from the real
    tokens before it, and is 0 where token t is padding or is the first real token of its row.
  """
  mask_BL = mask_BL.astype(jnp.int32)
  L = tokens_BL.shape[1]
  first = 0 if num_last is None else L - num_last - 1  # the first slot whose logits are needed
  hidden_BLD = model.hidden(tokens_BL, positions_BL=token_positions(mask_BL), segment_ids_BL=mask_BL)
  logp_BLV = jax.nn.log_softmax(model.logits_from_hidden(hidden_BLD[:, first:L - 1]) / temperature, axis=-1)
  lp_BL = jnp.take_along_axis(logp_BLV, tokens_BL[:, first + 1:, None], axis=-1)[..., 0]
  ent_BL = -jnp.sum(jnp.exp(logp_BLV) * logp_BLV, axis=-1)
  # Token t is scored when it is real and the token before it is real (contiguous real tokens).
  valid_BL = (mask_BL[:, first + 1:] > 0) & (mask_BL[:, first:L - 1] > 0)
  lp_BL, ent_BL = jnp.where(valid_BL, lp_BL, 0.0), jnp.where(valid_BL, ent_BL, 0.0)
  if num_last is not None:
    return lp_BL, ent_BL
  pad_B1 = jnp.zeros((tokens_BL.shape[0], 1), jnp.float32)
  return jnp.concatenate([pad_B1, lp_BL], axis=1), jnp.concatenate([pad_B1, ent_BL], axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "temperature"))
def _score_jit(graphdef, params, tokens_BL, mask_BL, temperature):
  return score_fn(nnx.merge(graphdef, params), tokens_BL, mask_BL, temperature=temperature)


def score(
  model: Transformer | Any,
  tokens_BL: Any,
  mask_BL: Any,
  *,
  params: Any = None,
  temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """Jitted `score_fn`: pass an NNX model, or its graphdef as `model` together with `params`."""
  if params is None:
    graphdef, params = nnx.split(model)
  else:
    graphdef = model
  return _score_jit(graphdef, params, jnp.asarray(tokens_BL), jnp.asarray(mask_BL), float(temperature))
