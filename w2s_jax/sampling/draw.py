"""Drawing one token per row: the sampling options, the top-k / top-p / min-p filters and the draw.

Log-probs and entropies of drawn tokens are those of the *tempered, unfiltered* distribution
softmax(logits / temperature) (temperature 1 when greedy); the filters only restrict which token is drawn.

Top-p without sorting the vocabulary: the nucleus of a peaked distribution lies among a few top tokens, so
`filter_logits` first takes the `TOP_P_CANDIDATES` largest logits (`lax.top_k`), measures their mass under
the full-vocabulary softmax and, when every row's candidates hold >= top_p of it, finds the cut among them;
otherwise (flat rows) it sorts the whole vocabulary as before (`lax.cond`). Both give the same cut.

Legend: B rows, V vocab, K candidates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

TOP_P_CANDIDATES = 128  # K of top-p's bounded search (the full sort runs when they hold < top_p)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How tokens are drawn.

  Attributes:
    max_new_tokens: tokens generated per row at most (S = P + max_new_tokens).
    temperature: logits are divided by it; 0 means greedy (argmax).
    top_k: keep the k most likely tokens (None = off).
    top_p: nucleus: keep the smallest set of top tokens whose probability reaches top_p (None = off).
    min_p: keep tokens with p >= min_p * max p (None = off). Applied after top-k and top-p, as in HF.
    stop_ids: tokens that end a row (EOS and any other stop tokens); the stop token is kept.
    pad_id: written in every slot that holds no token.
  """

  max_new_tokens: int = 128
  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  min_p: float | None = None
  stop_ids: tuple[int, ...] = ()
  pad_id: int = 0

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


def _top_p_threshold(sorted_BK: jax.Array, probs_BK: jax.Array, top_p: float) -> jax.Array:
  """The smallest kept logit [B, 1]: `sorted_BK` holds the largest logits in decreasing order and
  `probs_BK` their probabilities; tokens with less than top_p mass strictly before them are kept."""
  before_BK = jnp.cumsum(probs_BK, axis=-1) - probs_BK  # mass of strictly more likely tokens
  n_keep_B1 = jnp.maximum(jnp.sum(before_BK < top_p, axis=-1, keepdims=True), 1)
  return jnp.take_along_axis(sorted_BK, n_keep_B1 - 1, axis=-1)


def _top_p_full(x_BV: jax.Array, top_p: float) -> jax.Array:
  """Top-p's threshold by sorting the whole vocabulary."""
  sorted_BV = -jnp.sort(-x_BV, axis=-1)
  return _top_p_threshold(sorted_BV, jax.nn.softmax(sorted_BV, axis=-1), top_p)


def _top_p_bounded(x_BV: jax.Array, top_p: float) -> jax.Array:
  """Top-p's threshold from the `TOP_P_CANDIDATES` largest logits, or a full sort where they hold < top_p.

  The cut is the same: when the K candidates hold >= top_p, every token after them has >= top_p mass
  before it and is dropped, so counting within the candidates is exact.
  """
  if x_BV.shape[-1] <= TOP_P_CANDIDATES:
    return _top_p_full(x_BV, top_p)
  top_BK = jax.lax.top_k(x_BV, TOP_P_CANDIDATES)[0]
  probs_BK = jnp.exp(top_BK - jax.nn.logsumexp(x_BV, axis=-1, keepdims=True))
  enough = jnp.all(jnp.sum(probs_BK, axis=-1) >= top_p)
  bounded = lambda x: _top_p_threshold(top_BK, probs_BK, top_p)
  return jax.lax.cond(enough, bounded, lambda x: _top_p_full(x, top_p), x_BV)


def filter_logits(logits_BV: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Tempered logits with the tokens excluded by top-k / top-p / min-p set to -inf (HF order)."""
  x_BV = logits_BV.astype(jnp.float32) / (cfg.temperature if cfg.temperature > 0 else 1.0)
  neg_inf = jnp.float32(-jnp.inf)
  if cfg.top_k is not None:
    # The k largest logits, sorted: all that top-p needs after top-k (no sort of the vocabulary).
    sorted_BK = jax.lax.top_k(x_BV, cfg.top_k)[0]
    x_BV = jnp.where(x_BV < sorted_BK[:, -1:], neg_inf, x_BV)
  if cfg.top_p is not None:
    if cfg.top_k is None:
      threshold_B1 = _top_p_bounded(x_BV, cfg.top_p)
    else:
      threshold_B1 = _top_p_threshold(sorted_BK, jax.nn.softmax(sorted_BK, axis=-1), cfg.top_p)
    x_BV = jnp.where(x_BV < threshold_B1, neg_inf, x_BV)
  if cfg.min_p is not None:
    probs_BV = jax.nn.softmax(x_BV, axis=-1)
    floor_B1 = cfg.min_p * jnp.max(probs_BV, axis=-1, keepdims=True)
    x_BV = jnp.where(probs_BV < floor_B1, neg_inf, x_BV)
  return x_BV


def sample_token(
  key: jax.Array, logits_BV: jax.Array, cfg: SamplingConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Draws one token per row.

  Args:
    key: one PRNG key for the whole batch, or one key per row ([B], or [B, 2] raw uint32 keys; the
      sampler's per-row keys make a row's draw independent of which other rows share its batch).
    logits_BV: next-token logits.
    cfg: the sampling options.

  Returns:
    (tokens_B int32, logprobs_B, entropies_B) with log-prob/entropy of the tempered, unfiltered
    distribution.
  """
  # The barrier keeps XLA:CPU from fusing the LM-head matmul into the softmax reductions (it then
  # recomputes the product elementwise: ~2x slower decode steps at batch 16).
  logits_BV = jax.lax.optimization_barrier(logits_BV.astype(jnp.float32))
  logp_BV = jax.nn.log_softmax(logits_BV / (cfg.temperature if cfg.temperature > 0 else 1.0), axis=-1)
  entropies_B = -jnp.sum(jnp.exp(logp_BV) * logp_BV, axis=-1)
  if cfg.greedy:
    tokens_B = jnp.argmax(logits_BV, axis=-1)
  elif jnp.ndim(key) == (0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1):  # one key
    tokens_B = jax.random.categorical(key, filter_logits(logits_BV, cfg), axis=-1)
  else:
    draw = lambda k, x_V: jax.random.categorical(k, x_V)
    tokens_B = jax.vmap(draw)(key, filter_logits(logits_BV, cfg))
  tokens_B = tokens_B.astype(jnp.int32)
  return tokens_B, jnp.take_along_axis(logp_BV, tokens_B[:, None], axis=-1)[:, 0], entropies_B


__all__ = ["SamplingConfig", "filter_logits", "sample_token"]
