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


def score_fn(
  model: Transformer, tokens_BL: jax.Array, mask_BL: jax.Array, *, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
  """Log-prob of each token given the real tokens before it, and the entropy it was predicted with.

  Args:
    model: the decoder (call inside jit, or use `score`).
    tokens_BL: int token ids.
    mask_BL: bool/int, real tokens, contiguous in each row (left and/or right padding); positions
      count real tokens.
    temperature: logits are divided by it (use the sampling temperature for old-policy log-probs).

  Returns:
    (logprobs_BL, entropies_BL) float32; entry t scores token t from the real tokens before it, and is 0
    where token t is padding or is the first real token of its row.
  """
  mask_BL = mask_BL.astype(jnp.int32)
  positions_BL = jnp.maximum(jnp.cumsum(mask_BL, axis=1) - 1, 0)
  logits_BLV = model(tokens_BL, positions_BL=positions_BL, segment_ids_BL=mask_BL)
  logp_BLV = jax.nn.log_softmax(logits_BLV[:, :-1] / temperature, axis=-1)
  next_BL = tokens_BL[:, 1:]
  lp_BL = jnp.take_along_axis(logp_BLV, next_BL[..., None], axis=-1)[..., 0]
  ent_BL = -jnp.sum(jnp.exp(logp_BLV) * logp_BLV, axis=-1)
  # Token t is scored when it is real and the token before it is real (contiguous real tokens).
  valid_BL = (mask_BL[:, 1:] > 0) & (mask_BL[:, :-1] > 0)
  pad_B1 = jnp.zeros((tokens_BL.shape[0], 1), jnp.float32)
  lp_BL = jnp.concatenate([pad_B1, jnp.where(valid_BL, lp_BL, 0.0)], axis=1)
  ent_BL = jnp.concatenate([pad_B1, jnp.where(valid_BL, ent_BL, 0.0)], axis=1)
  return lp_BL, ent_BL


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
