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
from collections.abc import Callable, Mapping
from typing import Any

import jax
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


def load_hf_weights(
  model: Transformer,
  tensors: Mapping[str, Any],
  *,
  place: Callable[[np.ndarray, nnx.Variable], jax.Array] | None = None,
) -> None:
  """Copies HF-named tensors (numpy/torch-converted arrays) into `model`'s params, in place.

  `model` may be abstract (from `nnx.eval_shape`): values are replaced by concrete arrays in the
  param dtype. A tied model ignores `lm_head.weight` (transformers lists it in `state_dict()`).
  `tensors` is read one name at a time, so a lazy mapping keeps one tensor in host memory at once.

  Args:
    model: the (possibly abstract) model to fill.
    tensors: HF name -> array in HF layout.
    place: `(value in our layout and param dtype, param) -> array`, e.g. a sharded `device_put`;
      default `jnp.asarray` (the default device).

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
    raw = np.asarray(tensors[hf])
    value = _to_ours(raw, kind, tuple(param.shape))
    if value.shape != tuple(param.shape):
      raise ValueError(f"{hf}: HF shape {raw.shape} does not fit {param.shape}.")
    value = value.astype(param.dtype)
    param.set_value(jnp.asarray(value) if place is None else place(value, param))


def hf_state_dict(
  model: Transformer, *, to_host: Callable[[jax.Array], np.ndarray] = np.asarray
) -> dict[str, np.ndarray]:
  """Our params as HF-named numpy arrays (tied models omit `lm_head.weight`, as safetensors do).

  A projection wrapped by LoRA (`w2s_jax.models.lora`) exports its merged weight. `to_host` turns a
  (possibly sharded) array into numpy.
  """
  return {
    hf: np.asarray(_to_hf(to_host(_param(model, path)[...]), kind))
    for hf, path, kind in param_names(model.cfg)
  }


def hf_layer_types(cfg: ModelConfig) -> list[str]:
  """transformers' `layer_types` list for `cfg` (for writing config.json)."""
  return [
    "sliding_attention" if is_local_layer(cfg, i) else "full_attention" for i in range(cfg.n_layers)
  ]


_ARCHITECTURES = {
  "llama": "LlamaForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "qwen3": "Qwen3ForCausalLM",
  "gemma2": "Gemma2ForCausalLM",
  "gemma3_text": "Gemma3ForCausalLM",
}


def _hf_rope(theta: float, scaling: RopeScaling | None) -> dict[str, Any]:
  if scaling is None:
    return {"rope_type": "default", "rope_theta": theta}
  if scaling.kind == "linear":
    return {"rope_type": "linear", "rope_theta": theta, "factor": scaling.factor}
  return {
    "rope_type": "llama3",
    "rope_theta": theta,
    "factor": scaling.factor,
    "low_freq_factor": scaling.low_freq_factor,
    "high_freq_factor": scaling.high_freq_factor,
    "original_max_position_embeddings": scaling.original_max_position,
  }


def hf_model_type(cfg: ModelConfig) -> str:
  """The transformers `model_type` whose architecture `cfg` is (Gemma 3 -> "gemma3_text")."""
  if cfg.post_norms:
    return "gemma3_text" if cfg.qk_norm else "gemma2"
  if cfg.qk_norm:
    return "qwen3"
  return "qwen2" if cfg.qkv_bias else "llama"


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
  """A transformers config.json dict for `cfg` (the inverse of `config_from_hf`).

  Written in the transformers-5 form (`rope_parameters`, `layer_types`) plus the legacy keys
  (`rope_theta`, `sliding_window_pattern`) older readers look for.

  Raises:
    UnsupportedHFConfig: when no transformers architecture has exactly `cfg`'s options (checked by
      converting back with `config_from_hf`).
  """
  model_type = hf_model_type(cfg)
  is_gemma = model_type in _GEMMA
  out: dict[str, Any] = {
    "architectures": [_ARCHITECTURES[model_type]],
    "model_type": model_type,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "intermediate_size": cfg.d_ff,
    "num_hidden_layers": cfg.n_layers,
    "num_attention_heads": cfg.n_heads,
    "num_key_value_heads": cfg.n_kv_heads,
    "head_dim": cfg.head_dim,
    "rms_norm_eps": cfg.norm_eps,
    "max_position_embeddings": cfg.max_seq_len,
    "tie_word_embeddings": cfg.tie_embeddings,
    "rope_theta": cfg.rope_theta,
    "attention_bias": cfg.qkv_bias if model_type == "qwen2" else False,
    "mlp_bias": False,
    "dtype": cfg.param_dtype,
  }
  act = {"gelu_tanh": "gelu_pytorch_tanh"}.get(cfg.mlp_activation, cfg.mlp_activation)
  out["hidden_activation" if is_gemma else "hidden_act"] = act
  if is_gemma:
    out["hidden_act"] = act
  if model_type == "gemma3_text":
    local = cfg.rope_local_theta if cfg.rope_local_theta is not None else cfg.rope_theta
    out["rope_parameters"] = {
      "full_attention": _hf_rope(cfg.rope_theta, cfg.rope_scaling),
      "sliding_attention": {"rope_type": "default", "rope_theta": local},
    }
    out["rope_local_base_freq"] = local
  else:
    out["rope_parameters"] = _hf_rope(cfg.rope_theta, cfg.rope_scaling)
  if is_gemma:
    qpas = cfg.query_pre_attn_scalar
    out.update(  # transformers' strict config classes want an int scalar here
      query_pre_attn_scalar=int(qpas) if qpas is not None and float(qpas).is_integer() else qpas,
      attn_logit_softcapping=cfg.attn_logit_softcap,
      final_logit_softcapping=cfg.final_logit_softcap,
      sliding_window=cfg.sliding_window,
      sliding_window_pattern=cfg.sliding_window_pattern if cfg.sliding_window else None,
      layer_types=hf_layer_types(cfg),
    )
  if model_type == "qwen2":
    out["use_sliding_window"] = False
  keep = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
  keep = {k: keep[k] for k in ("dtype", "param_dtype", "remat")}
  if config_from_hf(out, **keep) != cfg:
    raise UnsupportedHFConfig(
      f"{cfg} has no exact transformers equivalent (closest: {model_type}, which reads back as "
      f"{config_from_hf(out, **keep)})."
    )
  return out
