"""Tokenizers behind one small interface.

`ByteTokenizer` is a real, lossless UTF-8 byte tokenizer (ids 0..2 are pad/BOS/EOS, byte b is b + 3): no
training, no files, used by the from-scratch smoke runs. SentencePiece and HF `tokenizer.json`
tokenizers join this module with the data issue.
"""

from __future__ import annotations

from typing import Protocol


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
