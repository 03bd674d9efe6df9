"""Hugging Face (transformers) config and weight names <-> `ModelConfig` and `Transformer` params.

Private helper for `convert.load_hf` / `convert.save_hf` and the parity tests. Covers the model
types `llama` (also SmolLM2), `qwen2`, `qwen3`, `gemma2` and `gemma3_text`, with both transformers-5
configs (`rope_parameters`, `layer_types`) and older config.json files (`rope_theta`,
`rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`).

HF linear weights are [out, in]; ours are [in, ...heads..., out] (see `transformer.py`), so the
mapping is a transpose plus a reshape of the head axis: no RoPE permutation is needed because both
use the rotate-half layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.presets import ModelConfig, RopeScaling
from w2s_jax.models.transformer import Transformer, is_local_layer

_GEMMA = ("gemma2", "gemma3_text")
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", *_GEMMA)


class UnsupportedHFConfig(ValueError):
  """A HF config option this decoder does not implement (the feature is absent, not approximated)."""


def _rope(
  params: Mapping[str, Any] | None, fallback_theta: float
) -> tuple[float, RopeScaling | None]:
  """(theta, scaling) from one transformers `rope_parameters` / legacy `rope_scaling` dict."""
  params = dict(params or {})
  theta = float(params.get("rope_theta", fallback_theta))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind == "default":
    return theta, None
  if kind == "linear":
    return theta, RopeScaling(kind="linear", factor=float(params["factor"]))
  if kind == "llama3":
    return theta, RopeScaling(
      kind="llama3",
      factor=float(params["factor"]),
      low_freq_factor=float(params["low_freq_factor"]),
      high_freq_factor=float(params["high_freq_factor"]),
      original_max_position=int(params["original_max_position_embeddings"]),
    )
  raise UnsupportedHFConfig(f"RoPE type {kind!r} is not supported (default, linear, llama3 are).")


def _sliding_pattern(hf: Mapping[str, Any], model_type: str, n_layers: int) -> int:
  """Every n-th layer is global: n from `layer_types`, else the legacy/default pattern."""
  layer_types = hf.get("layer_types")
  if not layer_types:
    default = 2 if model_type == "gemma2" else 6
    return int(hf.get("sliding_window_pattern") or default)
  full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
  pattern = full[0] + 1 if full else n_layers + 1
  expected = [
    "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)
  ]
  if list(layer_types) != expected:
    raise UnsupportedHFConfig(
      f"layer_types {layer_types} is not 'every n-th layer global'; ModelConfig cannot express it."
    )
  return pattern


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
  """Builds a `ModelConfig` from a transformers config dict (`config.to_dict()` or config.json).

  Args:
    hf: the config dict; `model_type` must be one of `SUPPORTED_MODEL_TYPES`.
    **overrides: `ModelConfig` fields to set afterwards (e.g. dtype="bfloat16").

  Raises:
    UnsupportedHFConfig: for a model type or option this decoder does not implement.
  """
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise UnsupportedHFConfig(
      f"model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}."
    )
  if hf.get("attention_bias") and model_type != "qwen2":
    raise UnsupportedHFConfig(
      f"attention_bias=True ({model_type}) also biases o_proj: unsupported."
    )
  if hf.get("mlp_bias"):
    raise UnsupportedHFConfig("mlp_bias=True is not supported.")
  if hf.get("use_sliding_window"):
    raise UnsupportedHFConfig("Qwen2 use_sliding_window=True is not supported.")
  n_heads = int(hf["num_attention_heads"])
  n_layers = int(hf["num_hidden_layers"])
  is_gemma = model_type in _GEMMA
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
  act = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}.get(act, act)

  rope = hf.get("rope_parameters")
  default_theta = float(hf.get("rope_theta", 10_000.0))
  local_theta = None
  if rope is not None and "full_attention" in rope:  # per-layer-type rope (Gemma 3)
    theta, scaling = _rope(rope["full_attention"], default_theta)
    local_theta, local_scaling = _rope(rope.get("sliding_attention"), 10_000.0)
    if local_scaling is not None:
      raise UnsupportedHFConfig("RoPE scaling of the sliding-window layers is not supported.")
  else:
    theta, scaling = _rope(rope if rope is not None else hf.get("rope_scaling"), default_theta)
    if model_type == "gemma3_text":  # legacy Gemma 3 config.json
      local_theta = float(hf.get("rope_local_base_freq", 10_000.0))

  sliding_window = hf.get("sliding_window") if is_gemma else None
  pattern = _sliding_pattern(hf, model_type, n_layers) if sliding_window else 1
  qpas = hf.get("query_pre_attn_scalar") if is_gemma else None
  cfg = ModelConfig(
    vocab_size=int(hf["vocab_size"]),
    d_model=int(hf["hidden_size"]),
    n_layers=n_layers,
    n_heads=n_heads,
    n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
    head_dim=int(hf.get("head_dim") or hf["hidden_size"] // n_heads),
    d_ff=int(hf["intermediate_size"]),
    mlp_activation=act,
    norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    norm_offset=1.0 if is_gemma else 0.0,
    qkv_bias=model_type == "qwen2",
    qk_norm=model_type in ("qwen3", "gemma3_text"),
    rope_theta=theta,
    rope_local_theta=local_theta,
    rope_scaling=scaling,
    tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    scale_embeddings=is_gemma,
    attn_logit_softcap=hf.get("attn_logit_softcapping") if is_gemma else None,
    final_logit_softcap=hf.get("final_logit_softcapping") if is_gemma else None,
    query_pre_attn_scalar=float(qpas) if qpas is not None else None,
    sliding_window=int(sliding_window) if sliding_window else None,
    sliding_window_pattern=pattern,
    post_norms=is_gemma,
    max_seq_len=int(hf.get("max_position_embeddings", 2048)),
  )
  return dataclasses.replace(cfg, **overrides)


# How an HF tensor becomes ours: "copy"; "heads_in" [heads*H, D] -> [D, heads, H];
# "heads_out" [D, N*H] -> [N, H, D]; "transpose" [out, in] -> [in, out];
# "bias" [heads*H] -> [heads, H].
_Path = tuple[str | int, ...]


def param_names(cfg: ModelConfig) -> list[tuple[str, _Path, str]]:
  """(HF name, path of our param in `Transformer`, conversion kind) for every parameter."""
  out: list[tuple[str, _Path, str]] = [("model.embed_tokens.weight", ("embedding_VD",), "copy")]
  for i in range(cfg.n_layers):
    hf, us = f"model.layers.{i}.", ("blocks", i)
    attn = hf + "self_attn."
    out += [
      (hf + "input_layernorm.weight", (*us, "attn_norm", "scale_D"), "copy"),
      (attn + "q_proj.weight", (*us, "attn", "q_DNH"), "heads_in"),
      (attn + "k_proj.weight", (*us, "attn", "k_DKH"), "heads_in"),
      (attn + "v_proj.weight", (*us, "attn", "v_DKH"), "heads_in"),
      (attn + "o_proj.weight", (*us, "attn", "o_NHD"), "heads_out"),
      (hf + "mlp.gate_proj.weight", (*us, "mlp", "gate_DF"), "transpose"),
      (hf + "mlp.up_proj.weight", (*us, "mlp", "up_DF"), "transpose"),
      (hf + "mlp.down_proj.weight", (*us, "mlp", "down_FD"), "transpose"),
    ]
    if cfg.qkv_bias:
      out += [
        (attn + "q_proj.bias", (*us, "attn", "q_bias_NH"), "bias"),
        (attn + "k_proj.bias", (*us, "attn", "k_bias_KH"), "bias"),
        (attn + "v_proj.bias", (*us, "attn", "v_bias_KH"), "bias"),
      ]
    if cfg.qk_norm:
      out += [
        (attn + "q_norm.weight", (*us, "attn", "q_norm", "scale_D"), "copy"),
        (attn + "k_norm.weight", (*us, "attn", "k_norm", "scale_D"), "copy"),
      ]
    if (
      cfg.post_norms
    ):  # Gemma: post_attention_layernorm is a true post-norm; pre_feedforward the MLP's
      out += [
        (hf + "post_attention_layernorm.weight", (*us, "post_attn_norm", "scale_D"), "copy"),
        (hf + "pre_feedforward_layernorm.weight", (*us, "mlp_norm", "scale_D"), "copy"),
        (hf + "post_feedforward_layernorm.weight", (*us, "post_mlp_norm", "scale_D"), "copy"),
      ]
    else:  # Llama/Qwen: post_attention_layernorm is the MLP's pre-norm
      out.append((hf + "post_attention_layernorm.weight", (*us, "mlp_norm", "scale_D"), "copy"))
  out.append(("model.norm.weight", ("final_norm", "scale_D"), "copy"))
  if not cfg.tie_embeddings:
    out.append(("lm_head.weight", ("lm_head_DV",), "transpose"))
  return out


def _param(model: Transformer, path: _Path) -> nnx.Param:
  obj: Any = model
  for key in path:
    obj = obj[key] if isinstance(key, int) else getattr(obj, key)
  return obj


def _to_ours(x: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
  if kind in ("heads_in", "heads_out"):
    return x.T.reshape(shape)
  if kind == "transpose":
    return x.T
  return x.reshape(shape)


def _to_hf(y: np.ndarray, kind: str) -> np.ndarray:
  if kind == "heads_in":
    return y.reshape(y.shape[0], -1).T
  if kind == "heads_out":
    return y.reshape(-1, y.shape[-1]).T
  if kind == "transpose":
    return y.T
  return y.reshape(-1) if kind == "bias" else y


def load_hf_weights(model: Transformer, tensors: Mapping[str, Any]) -> None:
  """Copies HF-named tensors (numpy/torch-converted arrays) into `model`'s params, in place.

  `model` may be abstract (from `nnx.eval_shape`): values are replaced by concrete arrays in the
  param dtype. A tied model ignores `lm_head.weight` (transformers lists it in `state_dict()`).

  Raises:
    ValueError: naming missing or unexpected tensors, or a tensor whose shape does not match.
  """
  names = param_names(model.cfg)
  expected = {hf for hf, _, _ in names}
  ignored = {"lm_head.weight"} if model.cfg.tie_embeddings else set()
  missing = sorted(expected - set(tensors))
  unexpected = sorted(set(tensors) - expected - ignored)
  if missing or unexpected:
    raise ValueError(
      f"HF weights do not match the config: missing {missing}, unexpected {unexpected}."
    )
  for hf, path, kind in names:
    param = _param(model, path)
    value = _to_ours(np.asarray(tensors[hf]), kind, tuple(param.shape))
    if value.shape != tuple(param.shape):
      raise ValueError(f"{hf}: HF shape {np.shape(tensors[hf])} does not fit {param.shape}.")
    param.set_value(jnp.asarray(value, dtype=param.dtype))


def hf_state_dict(model: Transformer) -> dict[str, np.ndarray]:
  """Our params as HF-named numpy arrays (tied models omit `lm_head.weight`, as safetensors do)."""
  return {
    hf: np.asarray(_to_hf(np.asarray(_param(model, path)[...]), kind))
    for hf, path, kind in param_names(model.cfg)
  }


def hf_layer_types(cfg: ModelConfig) -> list[str]:
  """transformers' `layer_types` list for `cfg` (for writing config.json)."""
  return [
    "sliding_attention" if is_local_layer(cfg, i) else "full_attention" for i in range(cfg.n_layers)
  ]
