"""Jitted autoregressive sampling with a preallocated KV cache: prefill, then a `lax.while_loop` decode.

Layout (one buffer per row, `S = P + max_new_tokens` slots):

    slot   0 ............ P-1 | P ............................ S-1
           [pad.. prompt     ] [generated tokens, stop token ][pad ...]

Prompts are **left-padded** to a common length P (`left_pad` builds them; `prompt_mask_BP` marks the
real tokens and must be a suffix of each row). Row b's real tokens are the contiguous slots
[start_B, length_B); slot s holds RoPE position s - start_B. The KV cache holds every token but the
last (the *pending* token, slot length_B - 1): one decode step runs the pending token, writes its
keys/values, samples the next token into slot length_B and advances length_B. Prefill therefore
covers slots [0, P - 1) and the first decode step runs the last prompt token. A fork (the tree
sampler) copies a row and sets a shorter `length_B`: the prefix stays in the copied cache.

Log-probs and entropies of sampled tokens are those of the *tempered, unfiltered* distribution
softmax(logits / temperature) (temperature 1 when greedy) -- the convention of TRL/verl old-policy
log-probs, and what `score(..., temperature=...)` returns for the same sequences. Top-k/top-p/min-p
only restrict which token is drawn.

Determinism: the draw into slot s of row r uses the key `fold_in(fold_in(key, r), s)` (r = the row's
index in the batch the caller passed), so a row's draws do not depend on the other rows in its batch or on
how decoding is split into calls: `decode(..., compact=True)`, which drops finished rows, and chunked calls
with the same key sample what one call does. The same key, params and prompts give the same output.

Sharding: with a mesh, every per-row array (cache included) is constrained to put its batch axis on the
rules' `batch` mesh axes and the cache's kv heads on the rules' `kv_heads` axis.

Legend: B rows, P prompt length, S slots, V vocab.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from w2s_jax.models import kv_cache
from w2s_jax.models.transformer import Transformer
from w2s_jax.sampling.compact import MIN_ROWS, decode_compact
from w2s_jax.sampling.decode_state import PAUSED, RUNNING, STOPPED, TRUNCATED, DecodeState
from w2s_jax.sampling.draw import SamplingConfig, filter_logits, sample_token
from w2s_jax.sharding import get_rules


@flax.struct.dataclass
class SampleOutput:
  """Finished sequences in the slot layout of the module docstring.

  Attributes:
    tokens_BS: int32 prompt + completion + padding.
    prompt_mask_BS: bool, the real prompt tokens.
    completion_mask_BS: bool, the generated tokens (stop token included).
    logprobs_BS: float32 log-probs of generated tokens (0 elsewhere).
    entropies_BS: float32 entropies at generated tokens (0 elsewhere).
    status_B: int32 STOPPED or TRUNCATED.
    prompt_len: P (static).
  """

  tokens_BS: jax.Array
  prompt_mask_BS: jax.Array
  completion_mask_BS: jax.Array
  logprobs_BS: jax.Array
  entropies_BS: jax.Array
  status_B: jax.Array
  prompt_len: int = flax.struct.field(pytree_node=False)

  @property
  def mask_BS(self) -> jax.Array:
    """bool, every real token (prompt or completion): the segment mask for `score`."""
    return self.prompt_mask_BS | self.completion_mask_BS

  @property
  def completions_BN(self) -> jax.Array:
    """int32 [B, max_new_tokens] generated tokens, `pad_id` after the end."""
    return self.tokens_BS[:, self.prompt_len :]


def left_pad(
  sequences: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into (tokens_BP int32, mask_BP bool); P = `length` or the longest."""
  P = max(len(s) for s in sequences) if length is None else length
  if any(len(s) == 0 or len(s) > P for s in sequences):
    raise ValueError(f"every prompt needs 1..{P} tokens; got lengths {[len(s) for s in sequences]}")
  tokens = np.full((len(sequences), P), pad_id, np.int32)
  mask = np.zeros((len(sequences), P), bool)
  for i, s in enumerate(sequences):
    tokens[i, P - len(s) :] = s
    mask[i, P - len(s) :] = True
  return tokens, mask


def check_left_padded(prompt_mask_BP: Any) -> None:
  """Raises ValueError unless each row of a concrete mask is zeros then >= 1 ones."""
  mask = np.asarray(prompt_mask_BP).astype(bool)
  n = mask.sum(axis=1)
  expected = np.arange(mask.shape[1])[None, :] >= (mask.shape[1] - n)[:, None]
  bad = np.flatnonzero((n == 0) | (mask != expected).any(axis=1))
  if bad.size:
    raise ValueError(
      f"prompt rows {bad.tolist()[:8]} are not left-padded with >= 1 real token; use sampling.left_pad"
    )


# ------------------------------------------------------------------------------------------------
# Prefill and the decode loop (pure; jit them through `Sampler`).
# ------------------------------------------------------------------------------------------------


def prefill(
  model: Transformer, prompts_BP: jax.Array, prompt_mask_BP: jax.Array, *, size: int, pad_id: int = 0
) -> DecodeState:
  """Builds the decode state of left-padded prompts with a cache of `size` slots (>= P + 1)."""
  B, P = prompts_BP.shape
  n_real_B = jnp.sum(prompt_mask_BP.astype(jnp.int32), axis=1)
  start_B = (P - n_real_B).astype(jnp.int32)
  cache = kv_cache.init_cache(model.cfg, start_B, size)
  if P > 1:
    cache = kv_cache.prefill(model, cache, prompts_BP[:, : P - 1])
  tokens_BS = jnp.full((B, size), pad_id, jnp.int32)
  tokens_BS = tokens_BS.at[:, :P].set(jnp.where(prompt_mask_BP, prompts_BP, pad_id).astype(jnp.int32))
  return DecodeState(
    cache=cache,
    tokens_BS=tokens_BS,
    logprobs_BS=jnp.zeros((B, size), jnp.float32),
    entropies_BS=jnp.zeros((B, size), jnp.float32),
    length_B=jnp.full((B,), P, jnp.int32),
    status_B=jnp.full((B,), RUNNING, jnp.int32),
    fed_B=n_real_B - 1,
  )


# Decode phases: early steps attend over a window of the cache instead of all S slots (see `decode`).
MIN_WINDOW = 32  # no phase is shorter than this many slots
MAX_PHASES = 3  # each phase compiles its own loop body (~+1.5 s each for the benchmark model)


def decode_windows(size: int, min_length: int = 0) -> tuple[int, ...]:
  """Cache lengths of the decode phases (increasing; the last is `size`).

  Splits the slots [min_length, size) that decoding can reach (rows hold >= `min_length` tokens) into
  up to `MAX_PHASES` equal parts of >= `MIN_WINDOW` slots, ends rounded up to multiples of 8; a short
  range gets one phase.
  """
  span = size - min_length
  n = max(1, min(MAX_PHASES, span // MIN_WINDOW))
  ends = (min_length + -(-span * j // n) for j in range(1, n))
  return tuple(sorted({min(size, -(-w // 8) * 8) for w in ends} - {size})) + (size,)


def decode(
  model: Transformer,
  state: DecodeState,
  key: jax.Array,
  cfg: SamplingConfig,
  *,
  pause_ids: tuple[int, ...] = (),
  max_steps: jax.Array | int | None = None,
  constrain=lambda s: s,
  windows: Sequence[int] | None = None,
  row_ids_B: jax.Array | None = None,
  min_running: jax.Array | int = 0,
  fuse: bool = True,
) -> DecodeState:
  """Decodes until every row is STOPPED, TRUNCATED or PAUSED (or `max_steps` steps ran).

  Rows not RUNNING on entry are left untouched. `constrain` is applied to the carried state (sharding).
  `row_ids_B` (default arange(B)) are the rows' indices for their PRNG keys; the loop also ends once at
  most `min_running` rows are RUNNING (`compact.decode_compact` then shrinks the batch).

  Phases: attention reads every slot of the cache it is given, a cost that grows with S and is
  memory-bound on CPU. So the loop runs in phases over `windows` (default `decode_windows(S)`): phase W
  runs on a copy of the first W slots while every running row's pending slot is < W, then writes the
  window back and hands over to the next phase; phases a call does not reach are skipped (`lax.cond`).
  Masked slots add exact zeros to the softmax, so phases change results only by float summation order
  (tokens equal, log-probs to ~1e-7).

  With `fuse`, the q|k|v and gate|up weights are concatenated once, before the loop
  (`kv_cache.fuse_weights`): each step then runs 4 matmuls per layer instead of 7 (same tokens).

  At B = 1 the loop carries the cache in its one-row form (`kv_cache.one_row`: buffers without the batch
  axis), which XLA:CPU updates in place; in a single-phase loop the [1, K, S, H] form made it copy every
  layer's buffers four times per step (tree root chains run at B = 1). Same tokens and log-probs.
  """
  B, S = state.tokens_BS.shape
  rows_B = jnp.arange(B)
  row_ids_B = rows_B if row_ids_B is None else row_ids_B
  stop_ids = jnp.asarray(cfg.stop_ids or (-1,), jnp.int32)
  pause = jnp.asarray(pause_ids or (-1,), jnp.int32)
  windows = decode_windows(S) if windows is None else tuple(windows)
  weights = kv_cache.fuse_weights(model) if fuse else None
  row_keys_B = jax.vmap(lambda r: jax.random.fold_in(key, r))(row_ids_B)

  def cond(window, carry):
    step, s = carry
    running_B = s.status_B == RUNNING
    going = jnp.sum(running_B.astype(jnp.int32)) > min_running
    if window < S:  # the pending slot (length - 1) of every running row must fall in the window
      going &= jnp.max(jnp.where(running_B, s.length_B, 0)) <= window
    return going if max_steps is None else going & (step < max_steps)

  def body(carry):
    step, s = carry
    active_B = s.status_B == RUNNING
    pending_B = s.length_B - 1
    token_B = jnp.take_along_axis(s.tokens_BS, pending_B[:, None], axis=1)[:, 0]
    slot_B = jnp.where(active_B, s.length_B, S)  # out of range: dropped
    # At B = 1 the body only runs while the one row is RUNNING, so its pending slot is in range.
    write_B = pending_B if s.cache.is_one_row else jnp.where(active_B, pending_B, S)
    logits_BV, cache = kv_cache.decode_step(model, s.cache, token_B, write_B, weights)
    keys_B = jax.vmap(jax.random.fold_in)(row_keys_B, s.length_B)
    drawn = sample_token(keys_B, logits_BV, cfg)
    return step + 1, constrain(_record_draw(s.replace(cache=cache), drawn, active_B, slot_B, stop_ids, pause))

  def phase(window, carry):
    step, s = carry
    part = constrain(s.replace(cache=kv_cache.window(s.cache, window)))
    step, part = jax.lax.while_loop(functools.partial(cond, window), body, (step, part))
    return step, constrain(part.replace(cache=kv_cache.write_window(s.cache, part.cache)))

  if B == 1:
    state = state.replace(cache=kv_cache.one_row(state.cache))
  carry = (jnp.int32(0), constrain(state))
  for window in windows:
    if window >= S:
      carry = jax.lax.while_loop(functools.partial(cond, S), body, carry)
    else:
      run = functools.partial(phase, window)
      carry = jax.lax.cond(cond(window, carry), run, lambda c: c, carry)
  return constrain(carry[1].replace(cache=kv_cache.batched(carry[1].cache)))


def _record_draw(s: DecodeState, drawn: tuple[jax.Array, jax.Array, jax.Array], active_B: jax.Array,
                 slot_B: jax.Array, stop_ids: jax.Array, pause: jax.Array) -> DecodeState:
  """Writes one step's drawn (token, log-prob, entropy) [B] into slot `slot_B` of the active rows (an
  out-of-range slot drops the write) and updates their length and status (stop > truncate > pause)."""
  new_B, logp_B, ent_B = drawn
  rows_B, S = jnp.arange(s.tokens_BS.shape[0]), s.tokens_BS.shape[1]
  length_B = s.length_B + active_B.astype(jnp.int32)
  status_B = jnp.where(jnp.isin(new_B, pause), PAUSED, s.status_B)
  status_B = jnp.where(length_B >= S, TRUNCATED, status_B)
  status_B = jnp.where(jnp.isin(new_B, stop_ids), STOPPED, status_B)
  return s.replace(
    tokens_BS=s.tokens_BS.at[rows_B, slot_B].set(new_B, mode="drop"),
    logprobs_BS=s.logprobs_BS.at[rows_B, slot_B].set(logp_B, mode="drop"),
    entropies_BS=s.entropies_BS.at[rows_B, slot_B].set(ent_B, mode="drop"),
    length_B=length_B,
    status_B=jnp.where(active_B, status_B, s.status_B),
    fed_B=s.fed_B + active_B.astype(jnp.int32),
  )


def to_output(state: DecodeState, prompt_len: int) -> SampleOutput:
  """The finished sequences of `state` (prompt region = slots [0, prompt_len))."""
  S = state.tokens_BS.shape[1]
  slot_1S = jnp.arange(S, dtype=jnp.int32)[None]
  prompt_mask = (slot_1S >= state.cache.start_B[:, None]) & (slot_1S < prompt_len)
  completion_mask = (slot_1S >= prompt_len) & (slot_1S < state.length_B[:, None])
  zero = jnp.zeros_like(state.logprobs_BS)
  return SampleOutput(
    tokens_BS=state.tokens_BS,
    prompt_mask_BS=prompt_mask,
    completion_mask_BS=completion_mask,
    logprobs_BS=jnp.where(completion_mask, state.logprobs_BS, zero),
    entropies_BS=jnp.where(completion_mask, state.entropies_BS, zero),
    status_B=state.status_B,
    prompt_len=prompt_len,
  )


# ------------------------------------------------------------------------------------------------
# The jitted front end.
# ------------------------------------------------------------------------------------------------


def state_constraint(mesh: Mesh | None, rules: Any = None):
  """A function placing a DecodeState's batch axes on the mesh (identity without a mesh)."""
  if mesh is None:
    return lambda s: s
  table = dict(get_rules("dp") if rules is None else rules)
  batch, kv = table.get("batch"), table.get("kv_heads")

  def place(path, x):
    in_cache = any(getattr(p, "name", None) in ("k", "v") for p in path)
    spec = PartitionSpec(batch, kv, None, None) if in_cache else PartitionSpec(batch)
    if in_cache and x.ndim == 3:  # a one-row cache (`kv_cache.one_row`): no batch axis
      spec = PartitionSpec(kv, None, None)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

  return lambda s: jax.tree_util.tree_map_with_path(place, s)


# Module-level jits with the graph, config and mesh static: every `Sampler` of the same model and
# config shares one compilation.
@functools.partial(jax.jit, static_argnames=("graphdef", "size", "pad_id", "mesh", "rules"))
def _prefill_jit(graphdef, params, prompts_BP, prompt_mask_BP, *, size, pad_id, mesh, rules):
  state = prefill(nnx.merge(graphdef, params), prompts_BP, prompt_mask_BP, size=size, pad_id=pad_id)
  return state_constraint(mesh, rules)(state)


@functools.partial(
  jax.jit,
  static_argnames=("graphdef", "cfg", "pause_ids", "mesh", "rules", "windows", "fuse"),
  donate_argnames=("state",),
)
def _decode_jit(
  graphdef, params, state, key, max_steps, row_ids_B, min_running, *, cfg, pause_ids, mesh, rules, windows,
  fuse,
):
  model = nnx.merge(graphdef, params)
  return decode(
    model, state, key, cfg, pause_ids=pause_ids, max_steps=max_steps, constrain=state_constraint(mesh, rules),
    windows=windows, row_ids_B=row_ids_B, min_running=min_running, fuse=fuse,
  )


to_output_jit = jax.jit(to_output, static_argnames=("prompt_len",))


class Sampler:
  """Jitted sampling for one model graph and one `SamplingConfig`; params are passed per call.

  `sampler(params, prompts_BP, prompt_mask_BP, key)` prefills, decodes to the end and returns a
  `SampleOutput`. `prefill` / `decode` are the two jitted halves, for callers that edit the state
  in between (the tree sampler). `decode` donates its state, so the cache is updated in place.

  Args:
    graphdef: `nnx.split(model)[0]`, or a `Transformer` (its graphdef is taken).
    cfg: sampling options (static: one compilation per config and shape).
    mesh: optional mesh; batch axes of all per-row arrays go to the rules' `batch` axes and the
      cache's kv heads to the rules' `kv_heads` axis. Params keep the sharding they come with.
    rules: logical-axis rules (`w2s_jax.sharding.get_rules(name)`); default "dp".
    fuse: decode with the q|k|v and gate|up weights concatenated (fewer matmuls per step; see
      `decode`); False runs the model's own projections (for comparison).
    compact_min_rows: the smallest batch `decode(compact=True)` shrinks to (`compact.bucket_sizes`; each
      size compiles its own decode loop, so a larger value compiles fewer loops; the same tokens).
  """

  def __init__(
    self, graphdef: Any, cfg: SamplingConfig, *, mesh: Mesh | None = None, rules: Any = None,
    fuse: bool = True, compact_min_rows: int = MIN_ROWS,
  ):
    if isinstance(graphdef, Transformer):
      graphdef = nnx.split(graphdef)[0]
    if int(compact_min_rows) < 1:
      raise ValueError(f"compact_min_rows must be at least 1, got {compact_min_rows}")
    self.graphdef, self.cfg, self.mesh, self.fuse = graphdef, cfg, mesh, fuse
    self.compact_min_rows = int(compact_min_rows)
    self.rules = None if mesh is None else tuple(get_rules("dp") if rules is None else rules)

  def __call__(
    self, params: Any, prompts_BP: Any, prompt_mask_BP: Any, key: jax.Array, *, compact: bool = False
  ) -> SampleOutput:
    """Samples completions of left-padded prompts; see the module docstring for the layout.

    `compact=True` stops computing rows that have finished (see `decode`): worth it when rows end at
    different lengths (stop tokens); the same tokens either way.
    """
    state = self.prefill(params, prompts_BP, prompt_mask_BP)
    state = self.decode(params, state, key, min_length=int(np.shape(prompts_BP)[1]), compact=compact)
    return to_output_jit(state, prompt_len=int(np.shape(prompts_BP)[1]))

  def prefill(
    self, params: Any, prompts_BP: Any, prompt_mask_BP: Any, *, size: int | None = None
  ) -> DecodeState:
    """Decode state after prefilling the prompts; `size` slots (default P + max_new_tokens)."""
    if not isinstance(prompt_mask_BP, jax.core.Tracer):
      check_left_padded(prompt_mask_BP)
    size = int(np.shape(prompts_BP)[1]) + self.cfg.max_new_tokens if size is None else size
    return _prefill_jit(
      self.graphdef,
      params,
      jnp.asarray(prompts_BP, jnp.int32),
      jnp.asarray(prompt_mask_BP, bool),
      size=size,
      pad_id=self.cfg.pad_id,
      mesh=self.mesh,
      rules=self.rules,
    )

  def decode(
    self,
    params: Any,
    state: DecodeState,
    key: jax.Array,
    *,
    pause_ids: Sequence[int] = (),
    max_steps: int | None = None,
    min_length: int = 0,
    compact: bool = False,
    row_ids: Any = None,
    min_running: int = 0,
    fine_buckets: bool = False,
  ) -> DecodeState:
    """Continues RUNNING rows until they stop, fill up or draw a `pause_ids` token. Donates `state`.

    `max_steps` (traced, no recompilation) bounds the number of decode steps of this call. `min_length`
    (static, one compilation per value) is a hint: the length rows start from, which places the decode
    phases (`decode_windows`); any value gives the same tokens. `compact=True` stops computing finished
    rows (`compact.decode_compact`: the batch shrinks as rows finish; same tokens), through the finer
    batch sizes of `compact.bucket_sizes(..., fine=True)` with `fine_buckets`. `row_ids` [B] are
    the rows' indices for their PRNG keys (default arange(B)); the call also returns once at most
    `min_running` rows are RUNNING.
    """
    if compact:
      if max_steps is not None:
        raise ValueError("decode(compact=True) runs rows to the end; it takes no max_steps")
      return decode_compact(
        self, params, state, key, pause_ids=pause_ids, min_length=min_length, fine=fine_buckets,
        min_rows=self.compact_min_rows,
      )
    B, S = (int(n) for n in state.tokens_BS.shape)
    return _decode_jit(
      self.graphdef,
      params,
      state,
      key,
      jnp.int32(np.iinfo(np.int32).max if max_steps is None else max_steps),
      jnp.arange(B, dtype=jnp.int32) if row_ids is None else jnp.asarray(row_ids, jnp.int32),
      jnp.int32(min_running),
      cfg=self.cfg,
      pause_ids=tuple(int(t) for t in pause_ids),
      mesh=self.mesh,
      rules=self.rules,
      windows=decode_windows(S, min_length),
      fuse=self.fuse,
    )


def generate(
  model: Transformer, prompts_BP: Any, prompt_mask_BP: Any, key: jax.Array, cfg: SamplingConfig
) -> SampleOutput:
  """One-call sampling from an NNX model (compilations are cached per graph and config)."""
  graphdef, params = nnx.split(model)
  return Sampler(graphdef, cfg)(params, prompts_BP, prompt_mask_BP, key)


__all__ = [
  "PAUSED", "RUNNING", "STOPPED", "TRUNCATED", "DecodeState", "SampleOutput", "Sampler", "SamplingConfig",
  "decode", "decode_windows", "filter_logits", "generate", "left_pad", "prefill", "sample_token", "to_output",
]
