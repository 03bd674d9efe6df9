"""llama.cpp GGUF files -> HF-named tensors, a transformers-style config dict and a tokenizer.

Private helper of `convert.load_gguf`; the file is parsed by `gguf_file.GGUFFile`, the weights dequantized
by the `gguf` package's NumPy kernels.

GGUF facts used here (llama architecture):
- Metadata keys `llama.block_count`, `llama.embedding_length`, ... hold the config; the vocabulary is
  `tokenizer.ggml.tokens` / `.merges` / `.token_type` (3 = control, 4 = user-defined).
- Tensor names: `token_embd`, `blk.{i}.attn_{norm,q,k,v,output}`, `blk.{i}.ffn_{norm,gate,up,down}`,
  `output_norm`, `output` (absent when the embeddings are tied). Numpy shapes are HF's [out, in].
- llama.cpp's converter permutes the rows of `attn_q` / `attn_k` within each head from the rotate-half
  layout to interleaved pairs: row (h, i, j) of the [heads, 2, H/2] split moves to (h, j, i). We undo it:
  reshape [heads, H/2, 2, in], swap the two middle axes.
- Llama 3.x files store RoPE scaling as a `rope_freqs` tensor (per-frequency divisors), not as metadata;
  we recover the llama3 scaling parameters and check they reproduce it exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from w2s_jax.models._hf_mapping import UnsupportedHFConfig
from w2s_jax.models.gguf_file import GGUFFile, GGUFTensor
from w2s_jax.models.presets import RopeScaling
from w2s_jax.models.transformer import rope_inv_freq

_SUPPORTED_ARCHS = ("llama",)

# GGUF per-layer suffix -> HF per-layer name.
_LAYER_NAMES = {
  "attn_norm.weight": "input_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}

# Pre-tokenizer regexes (llama.cpp `tokenizer.ggml.pre` names).
_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE = ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx")


def open_gguf(path: str) -> GGUFFile:
  """The parsed file (`gguf_file.GGUFFile`: metadata, tensor table, memory-mapped bytes), shared by the
  callers in this process while the file is unchanged (same size and modification time): a W2S sweep over
  SmolLM2's layers asks for the same file several times."""
  real = os.path.realpath(path)
  stat = os.stat(real)
  return _reader(real, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _reader(path: str, size: int, mtime_ns: int) -> GGUFFile:
  del size, mtime_ns  # part of the cache key only
  return GGUFFile(path)


def _field(reader: GGUFFile, key: str, default: Any = None) -> Any:
  return reader.fields.get(key, default)


def _tensor_map(reader: GGUFFile) -> dict[str, Any]:
  return {t.name: t for t in reader.tensors}


def _llama3_scaling(freq_factors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any]:
  """llama3 `rope_parameters` whose divisors equal `freq_factors` (llama.cpp's `rope_freqs`)."""
  factor = float(freq_factors.max())
  base = rope_inv_freq(head_dim, theta, None)
  for original in (8192, 4096, 16384, 32768):
    for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0)):
      scaling = RopeScaling("llama3", factor, low, high, original)
      if np.allclose(base / rope_inv_freq(head_dim, theta, scaling), freq_factors, rtol=1e-4):
        return {
          "rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": low,
          "high_freq_factor": high, "original_max_position_embeddings": original,
        }
  raise UnsupportedHFConfig(
    "this GGUF's rope_freqs tensor is not a llama3 RoPE scaling with a standard parameter set."
  )


def hf_config_dict(reader: GGUFFile) -> dict[str, Any]:
  """A transformers-style config dict (for `config_from_hf`) from the file's metadata.

  Raises:
    UnsupportedHFConfig: for an architecture other than llama.
  """
  arch = _field(reader, "general.architecture")
  if arch not in _SUPPORTED_ARCHS:
    raise UnsupportedHFConfig(f"GGUF architecture {arch!r} is not supported; supported: {_SUPPORTED_ARCHS}.")
  get = lambda key, default=None: _field(reader, f"{arch}.{key}", default)
  tensors = _tensor_map(reader)
  n_heads = int(get("attention.head_count"))
  d_model = int(get("embedding_length"))
  head_dim = int(get("attention.key_length", get("rope.dimension_count", d_model // n_heads)))
  vocab = get("vocab_size")
  if vocab is None:
    vocab = len(reader.fields["tokenizer.ggml.tokens"])
  theta = float(get("rope.freq_base", 10_000.0))
  rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
  if "rope_freqs.weight" in tensors:
    rope = _llama3_scaling(_dequantize(tensors["rope_freqs.weight"]), theta, head_dim)
  elif get("rope.scaling.type") == "linear":
    rope = {"rope_type": "linear", "rope_theta": theta, "factor": float(get("rope.scaling.factor"))}
  elif get("rope.scaling.type") not in (None, "none"):
    raise UnsupportedHFConfig(f"GGUF RoPE scaling {get('rope.scaling.type')!r} is not supported.")
  return {
    "model_type": "llama",
    "vocab_size": int(vocab),
    "hidden_size": d_model,
    "intermediate_size": int(get("feed_forward_length")),
    "num_hidden_layers": int(get("block_count")),
    "num_attention_heads": n_heads,
    "num_key_value_heads": int(get("attention.head_count_kv", n_heads)),
    "head_dim": head_dim,
    "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
    "max_position_embeddings": int(get("context_length", 2048)),
    "rope_parameters": rope,
    "tie_word_embeddings": "output.weight" not in tensors,
  }


def _dequantize(tensor: GGUFTensor) -> np.ndarray:
  """float32 numpy array of a GGUF tensor, in numpy (HF [out, in]) shape."""
  import gguf  # noqa: PLC0415

  shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims innermost first
  kind = gguf.GGMLQuantizationType(tensor.tensor_type)
  return np.asarray(gguf.quants.dequantize(tensor.data, kind), np.float32).reshape(shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation: [n_heads * H, in] interleaved -> rotate-half rows."""
  half = w.shape[0] // n_heads // 2
  return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's q/k row permutation (the inverse of `unpermute_qk`), for writing test files."""
  half = w.shape[0] // n_heads // 2
  return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _HFTensors(Mapping[str, np.ndarray]):
  """HF name -> dequantized, un-permuted float32 tensor, computed on access."""

  def __init__(self, reader: GGUFFile, hf: Mapping[str, Any]):
    self._tensors = _tensor_map(reader)
    self._heads = {"q_proj": hf["num_attention_heads"], "k_proj": hf["num_key_value_heads"]}
    self._names: dict[str, str] = {}
    for name in self._tensors:
      if name in _GLOBAL_NAMES:
        self._names[_GLOBAL_NAMES[name]] = name
      elif name.startswith("blk."):
        _, layer, suffix = name.split(".", 2)
        if suffix in _LAYER_NAMES:
          self._names[f"model.layers.{layer}.{_LAYER_NAMES[suffix]}"] = name
        else:
          raise UnsupportedHFConfig(f"GGUF tensor {name!r} has no counterpart in the llama decoder.")
      elif name != "rope_freqs.weight":
        raise UnsupportedHFConfig(f"GGUF tensor {name!r} has no counterpart in the llama decoder.")

  def __getitem__(self, hf_name: str) -> np.ndarray:
    w = _dequantize(self._tensors[self._names[hf_name]])
    for proj, heads in self._heads.items():
      if hf_name.endswith(f"self_attn.{proj}.weight"):
        w = unpermute_qk(w, int(heads))
    return w

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)


def hf_tensors(reader: GGUFFile, hf: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
  """The file's weights as a lazy HF-named mapping (`_hf_mapping.load_hf_weights` input)."""
  return _HFTensors(reader, hf)


def tokenizer_parts(reader: GGUFFile) -> dict[str, Any] | None:
  """The embedded byte-level BPE tokenizer (`tokenizers.Tokenizer`) and its special ids, or None.

  Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE: SmolLM2, Llama 3, Qwen) is rebuilt; a
  sentencepiece vocabulary returns None.
  """
  if _field(reader, "tokenizer.ggml.model") != "gpt2":
    return None
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415

  tokens = list(_field(reader, "tokenizer.ggml.tokens"))
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
  types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
  tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
  pre = _field(reader, "tokenizer.ggml.pre", "default")
  if pre in _LLAMA3_PRE:
    tok.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
  else:  # gpt2's split; "smollm" (llama.cpp) first isolates every digit
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":
      steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
  tok.decoder = decoders.ByteLevel()
  added = lambda kind, special: [
    AddedToken(t, special=special, normalized=False) for t, k in zip(tokens, types) if k == kind
  ]
  tok.add_special_tokens(added(3, True))  # control tokens (<|im_start|>, <|endoftext|>, ...)
  tok.add_tokens(added(4, False))  # user-defined tokens, matched whole
  ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding")}
  return {
    "tokenizer": tok,
    "bos_id": None if ids["bos"] is None else int(ids["bos"]),
    "eos_id": int(ids["eos"]),
    "pad_id": None if ids["padding"] is None else int(ids["padding"]),
    "chat_template": _field(reader, "tokenizer.chat_template"),
  }
