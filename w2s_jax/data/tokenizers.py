"""Tokenizers behind one small interface: bytes, SentencePiece `.model` files, HF `tokenizer.json` files.

Every tokenizer has `vocab_size`, `pad_id`, `bos_id`, `eos_id`, `encode(text) -> ids` (no special tokens:
packing adds BOS/EOS) and `decode(ids) -> text` (special tokens dropped).

- `ByteTokenizer`: lossless UTF-8 bytes (ids 0..2 are pad/BOS/EOS, byte b is b + 3); no files.
- `SentencePieceTokenizer`: Gemma-style `.model` files, or ones `train_sentencepiece` makes.
- `HFTokenizer`: a `tokenizer.json` (Llama 3, Qwen, SmolLM2 …) through the `tokenizers` package; special
  tokens and the chat template come from `tokenizer_config.json` beside it when present.

`HFTokenizer`, `CHAT_TEMPLATES` (ChatML, Gemma) and `render_chat` are defined in
`w2s_jax.models.hf_tokenizer`, because checkpoints loaded by `models.convert` carry one and `models`
imports nothing above itself; they are re-exported here, so both spellings name the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from w2s_jax.models.hf_tokenizer import (
  CHAT_TEMPLATES,
  ChatTemplateMixin,
  HFTokenizer,
  render_chat,
  resolve_template,
)

__all__ = [
  "CHAT_TEMPLATES",
  "ByteTokenizer",
  "HFTokenizer",
  "SentencePieceTokenizer",
  "Tokenizer",
  "load_tokenizer",
  "render_chat",
  "train_sentencepiece",
]


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens: `encode` never fails and `decode(encode(s)) == s` for every string."""

  pad_id = 0
  bos_id = 1
  eos_id = 2
  offset = 3
  vocab_size = 256 + offset

  def encode(self, text: str) -> list[int]:
    return [b + self.offset for b in text.encode("utf-8")]

  def decode(self, ids: list[int]) -> str:
    data = bytes(i - self.offset for i in ids if i >= self.offset)
    return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer(ChatTemplateMixin):
  """A SentencePiece `.model` file.

  Args:
    path: the `.model` file.
    chat_template: a Jinja template or a key of `CHAT_TEMPLATES` (e.g. "gemma").
  """

  def __init__(self, path: str | Path, *, chat_template: str | None = None):
    import sentencepiece as spm

    self.path = str(path)
    self.sp = spm.SentencePieceProcessor(model_file=self.path)
    self.vocab_size = int(self.sp.get_piece_size())
    self.bos_id, self.eos_id = int(self.sp.bos_id()), int(self.sp.eos_id())
    if self.bos_id < 0 or self.eos_id < 0:
      raise ValueError(f"{path}: the model defines no BOS or EOS piece (bos={self.bos_id}, "
                       f"eos={self.eos_id}); retrain it with bos_id/eos_id set")
    self.pad_id = int(self.sp.pad_id()) if self.sp.pad_id() >= 0 else self.eos_id
    self.chat_template = resolve_template(chat_template)

  def encode(self, text: str) -> list[int]:
    return list(self.sp.encode(text))

  def decode(self, ids: list[int]) -> str:
    return self.sp.decode([int(i) for i in ids])


def load_tokenizer(spec: str, **kwargs: Any) -> Tokenizer:
  """A tokenizer from a spec: "bytes", a `.model` file, or a `tokenizer.json` file or its folder."""
  if spec == "bytes":
    return ByteTokenizer()
  if spec.endswith(".model"):
    return SentencePieceTokenizer(spec, **kwargs)
  path = Path(spec)
  if path.name == "tokenizer.json" or (path / "tokenizer.json").exists():
    return HFTokenizer(path, **kwargs)
  raise ValueError(f"cannot tell which tokenizer {spec!r} is: give 'bytes', a .model file, or a "
                   "tokenizer.json file or folder")


def train_sentencepiece(
  texts: Iterable[str],
  model_prefix: str | Path,
  *,
  vocab_size: int,
  model_type: str = "bpe",
  character_coverage: float = 1.0,
  max_sentence_length: int = 16384,
) -> SentencePieceTokenizer:
  """Trains a SentencePiece model on `texts` and returns it loaded from `<model_prefix>.model`.

  Ids 0..3 are pad, BOS, EOS and unk (pad/BOS/EOS as in `ByteTokenizer`); unknown characters fall back to
  bytes, so every string encodes. Training runs on one thread, so the same texts give the same model.

  Args:
    texts: training text (each string a "sentence"; long documents are split at newlines).
    model_prefix: output path without extension; writes `.model` and `.vocab`.
    vocab_size: number of pieces (at least 256 + 4 + the distinct characters kept as pieces).
    model_type: "bpe" or "unigram".
    character_coverage: share of characters covered by pieces (the rest are bytes).
    max_sentence_length: longest sentence in bytes (longer lines are skipped by SentencePiece).
  """
  import sentencepiece as spm

  def lines():
    for text in texts:
      for line in text.split("\n"):
        if line.strip():
          yield line

  Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
  spm.SentencePieceTrainer.train(
    sentence_iterator=lines(), model_prefix=str(model_prefix), vocab_size=vocab_size, model_type=model_type,
    character_coverage=character_coverage, byte_fallback=True, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
    num_threads=1, max_sentence_length=max_sentence_length, minloglevel=2,
    split_digits=True, allow_whitespace_only_pieces=True,
    remove_extra_whitespaces=False, normalization_rule_name="identity",
  )
  return SentencePieceTokenizer(f"{model_prefix}.model")
