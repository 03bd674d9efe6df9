"""Model configurations: one `ModelConfig` dataclass and named presets.

One decoder (`w2s_jax.models.transformer.Transformer`) covers Llama 3, Qwen2/2.5, Qwen3, Gemma 2/3 and
SmolLM2; the differences between families are fields of `ModelConfig`, never subclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3-style RoPE frequency scaling (`rope_type="llama3"`) or linear position scaling."""

  kind: str = "llama3"  # "llama3" | "linear"
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and family options of the decoder.

  Attributes:
    vocab_size: V, number of token embeddings.
    d_model: D, residual width.
    n_layers: number of decoder blocks.
    n_heads: N, query heads.
    n_kv_heads: K, key/value heads (GQA when K < N, MQA when K == 1).
    head_dim: H, per-head width.
    d_ff: F, hidden width of the gated MLP.
    mlp_activation: "silu" (SwiGLU: Llama, Qwen, SmolLM2) or "gelu_tanh" (GeGLU: Gemma).
    norm_eps: RMSNorm epsilon.
    norm_offset: 0.0 scales by w (Llama/Qwen); 1.0 scales by (1 + w) with w initialised at 0 (Gemma).
    qkv_bias: biases on the q/k/v projections (Qwen2/2.5).
    qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3, Gemma 3).
    rope_theta: RoPE base of the global-attention layers.
    rope_local_theta: RoPE base of the sliding-window layers (Gemma 3 uses 10k); None = rope_theta.
    rope_scaling: optional frequency scaling of the global layers.
    tie_embeddings: LM head shares the embedding matrix.
    scale_embeddings: multiply embeddings by sqrt(D) (Gemma).
    attn_logit_softcap: tanh soft-capping of attention logits (Gemma 2); None = off.
    final_logit_softcap: tanh soft-capping of output logits (Gemma 2); None = off.
    query_pre_attn_scalar: attention scale is this ** -0.5 (Gemma); None = head_dim ** -0.5.
    sliding_window: window of the local layers; None = every layer is global.
    sliding_window_pattern: every n-th layer (1-based) is global, the others local (Gemma 2: 2, Gemma 3: 6).
    post_norms: extra RMSNorm after attention and after the MLP, before the residual add (Gemma 2/3).
    max_seq_len: longest position the model is used at (for RoPE tables and caches).
    dtype: compute dtype ("float32" or "bfloat16"); parameters stay in `param_dtype`, so
      dtype="bfloat16" with param_dtype="float32" is bf16 compute on f32 master weights.
    param_dtype: parameter dtype.
    remat: what each decoder block keeps for the backward pass (one of `REMAT_CHOICES`): "none" keeps
      every activation; "block" keeps only the block's input and recomputes the rest (least memory);
      "dots_saveable" / "dots_with_no_batch_dims_saveable" (`jax.checkpoint_policies`) keep the matmul
      outputs (all of them / those without batch dimensions, i.e. not attention's) and recompute the
      elementwise work. True / False are read as "block" / "none".
    attention: "einsum" (the project's grouped-query einsums, the default), "dot_product"
      (`jax.nn.dot_product_attention` with `implementation=None`: XLA on CPU/TPU, cuDNN's fused
      attention on GPUs where it applies) or "blocked" (the einsums per block of 64 queries against
      their causal key prefix only, skipping the masked upper triangle: `causal_attention.py`).
      Applies to full-sequence passes (training, scoring, prefill); "dot_product" has no attention
      soft-capping.
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  mlp_activation: str = "silu"
  norm_eps: float = 1e-5
  norm_offset: float = 0.0
  qkv_bias: bool = False
  qk_norm: bool = False
  rope_theta: float = 10_000.0
  rope_local_theta: float | None = None
  rope_scaling: RopeScaling | None = None
  tie_embeddings: bool = True
  scale_embeddings: bool = False
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  query_pre_attn_scalar: float | None = None
  sliding_window: int | None = None
  sliding_window_pattern: int = 1
  post_norms: bool = False
  max_seq_len: int = 2048
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str | bool = "none"
  attention: str = "einsum"


ATTENTION_IMPLEMENTATIONS = ("einsum", "dot_product", "blocked")
DTYPES = ("float32", "bfloat16")
REMAT_CHOICES = ("none", "block", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_choice(remat: str | bool) -> str:
  """`ModelConfig.remat` as one of `REMAT_CHOICES` (True -> "block", False -> "none").

  Raises:
    ValueError: for any other value.
  """
  if isinstance(remat, bool):
    return "block" if remat else "none"
  if remat not in REMAT_CHOICES:
    raise ValueError(f"remat = {remat!r}; choose one of {list(REMAT_CHOICES)}.")
  return remat


# ------------------------------------------------------------------------------------------------
# Presets.
# ------------------------------------------------------------------------------------------------


def _ladder(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int) -> ModelConfig:
  """A from-scratch Llama-shaped model: SwiGLU, tied embeddings, GQA.

  The vocabulary defaults to 8192; override `vocab_size` with the size of the trained tokenizer.
  """
  return ModelConfig(
    vocab_size=8192,
    d_model=d_model,
    n_layers=n_layers,
    n_heads=n_heads,
    n_kv_heads=n_kv_heads,
    head_dim=d_model // n_heads,
    d_ff=d_ff,
    max_seq_len=1024,
  )


_GEMMA3 = dict(
  vocab_size=262_144,
  n_heads=4,
  n_kv_heads=1,
  head_dim=256,
  mlp_activation="gelu_tanh",
  norm_eps=1e-6,
  norm_offset=1.0,
  qk_norm=True,
  rope_theta=1_000_000.0,
  rope_local_theta=10_000.0,
  tie_embeddings=True,
  scale_embeddings=True,
  query_pre_attn_scalar=256.0,
  sliding_window=512,
  sliding_window_pattern=6,
  post_norms=True,
  max_seq_len=32_768,
)

PRESETS: dict[str, ModelConfig] = {
  # Unit tests and smoke runs (vocab 512 covers a 259-symbol byte tokenizer).
  # The Llama shape of the peer benchmarks (reference/performance.md): ~4.2M params at vocab 512.
  "perf-4m": ModelConfig(
    vocab_size=512,
    d_model=256,
    n_layers=4,
    n_heads=4,
    n_kv_heads=4,
    head_dim=64,
    d_ff=1024,
    max_seq_len=512,
  ),
  "tiny": ModelConfig(
    vocab_size=512,
    d_model=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    d_ff=128,
    max_seq_len=512,
  ),
  # From-scratch ladder for weak-to-strong on CPU. Parameters at vocab 8192 (total / non-embedding):
  # ladder-0 0.29M / 25k, ladder-1 0.67M / 0.15M, ladder-2 1.8M / 0.79M, ladder-3 6.8M / 4.7M,
  # ladder-4 20.4M / 17.2M (the ~20M benchmark model).
  "ladder-0": _ladder(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=96),
  "ladder-1": _ladder(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=192),
  "ladder-2": _ladder(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384),
  "ladder-3": _ladder(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, d_ff=768),
  "ladder-4": _ladder(d_model=384, n_layers=10, n_heads=6, n_kv_heads=2, d_ff=1152),
  # Shapes of released checkpoints (HF config.json values).
  "smollm2-135m": ModelConfig(
    vocab_size=49_152,
    d_model=576,
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    head_dim=64,
    d_ff=1536,
    norm_eps=1e-5,
    rope_theta=100_000.0,
    tie_embeddings=True,
    max_seq_len=8192,
  ),
  "llama3.2-1b": ModelConfig(
    vocab_size=128_256,
    d_model=2048,
    n_layers=16,
    n_heads=32,
    n_kv_heads=8,
    head_dim=64,
    d_ff=8192,
    norm_eps=1e-5,
    rope_theta=500_000.0,
    rope_scaling=RopeScaling(
      kind="llama3",
      factor=32.0,
      low_freq_factor=1.0,
      high_freq_factor=4.0,
      original_max_position=8192,
    ),
    tie_embeddings=True,
    max_seq_len=131_072,
  ),
  "qwen2.5-0.5b": ModelConfig(
    vocab_size=151_936,
    d_model=896,
    n_layers=24,
    n_heads=14,
    n_kv_heads=2,
    head_dim=64,
    d_ff=4864,
    norm_eps=1e-6,
    qkv_bias=True,
    rope_theta=1_000_000.0,
    tie_embeddings=True,
    max_seq_len=32_768,
  ),
  "qwen3-0.6b": ModelConfig(
    vocab_size=151_936,
    d_model=1024,
    n_layers=28,
    n_heads=16,
    n_kv_heads=8,
    head_dim=128,
    d_ff=3072,
    norm_eps=1e-6,
    qk_norm=True,
    rope_theta=1_000_000.0,
    tie_embeddings=True,
    max_seq_len=40_960,
  ),
  "gemma2-2b": ModelConfig(
    vocab_size=256_000,
    d_model=2304,
    n_layers=26,
    n_heads=8,
    n_kv_heads=4,
    head_dim=256,
    d_ff=9216,
    mlp_activation="gelu_tanh",
    norm_eps=1e-6,
    norm_offset=1.0,
    rope_theta=10_000.0,
    tie_embeddings=True,
    scale_embeddings=True,
    attn_logit_softcap=50.0,
    final_logit_softcap=30.0,
    query_pre_attn_scalar=256.0,
    sliding_window=4096,
    sliding_window_pattern=2,
    post_norms=True,
    max_seq_len=8192,
  ),
  "gemma3-270m": ModelConfig(d_model=640, n_layers=18, d_ff=2048, **_GEMMA3),
  "gemma3-1b": ModelConfig(d_model=1152, n_layers=26, d_ff=6912, **_GEMMA3),
}


def get_preset(name: str, **overrides) -> ModelConfig:
  """Returns preset `name` with `overrides` applied (e.g. `get_preset("ladder-2", vocab_size=512)`).

  Raises:
    ValueError: for an unknown preset name or an unknown field name.
  """
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}.")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"Unknown ModelConfig field(s) {unknown}; valid fields: {sorted(fields)}.")
  return dataclasses.replace(PRESETS[name], **overrides)


def from_section(model: Any) -> ModelConfig:
  """The `ModelConfig` of a config file's model section.

  The section is `{preset, vocab_size, overrides: {...}}` with optional shortcuts `dtype` (compute
  dtype; parameters stay float32), `attention` (see `ModelConfig.attention`) and `remat` (see
  `ModelConfig.remat`); a shortcut and an override of the same field must agree.

  Raises:
    ValueError: for an unknown preset/field, a bad `dtype`/`attention`/`remat` value, or a conflict.
  """
  overrides = dict(model.get("overrides", {}))
  shortcuts = (("dtype", DTYPES), ("attention", ATTENTION_IMPLEMENTATIONS), ("remat", REMAT_CHOICES))
  for key, allowed in shortcuts:
    value = model.get(key)
    if value is None:
      continue
    if value not in allowed:
      raise ValueError(f"model.{key} = {value!r}; choose one of {list(allowed)}.")
    if key in overrides and overrides[key] != value:
      raise ValueError(f"model.{key} = {value!r} conflicts with model.overrides.{key} = {overrides[key]!r}.")
    overrides[key] = value
  return get_preset(model.preset, vocab_size=int(model.vocab_size), **overrides)


def count_params(cfg: ModelConfig) -> int:
  """Number of parameters of `Transformer(cfg)`, computed from the shapes alone."""
  D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
  N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  attn = 2 * D * N * H + 2 * D * K * H
  if cfg.qkv_bias:
    attn += N * H + 2 * K * H
  if cfg.qk_norm:
    attn += 2 * H
  block = attn + 3 * D * F + (4 if cfg.post_norms else 2) * D
  head = 0 if cfg.tie_embeddings else D * V
  return V * D + cfg.n_layers * block + D + head
