"""A GGUF file's metadata and tensor table, parsed in one pass; tensor bytes stay memory-mapped.

`gguf.GGUFReader` builds a NumPy view per part of every metadata value: for SmolLM2's 49,152-token
vocabulary and 48,900 merges that is seconds per file and process (8 of the 9 s `make_tokenizer` took).
This reader decodes the same bytes straight to Python values (0.1-0.2 s for SmolLM2) and exposes what
`_gguf` reads: `fields` (key -> value, as `GGUFReader`'s `field.contents()` returns it) and `tensors`
(name, GGUF-order shape, ggml type, the raw bytes as a NumPy view). Dequantization stays with the `gguf`
package's kernels.

Layout (GGUF v2 and v3, little-endian): the magic `GGUF`; u32 version; u64 tensor count; u64 key-value
count; the key-values (string key, u32 value type, value; a string is a u64 byte length and UTF-8 bytes, an
array a u32 element type, a u64 count and the elements); the tensor infos (name, u32 number of dims, u64
dims innermost first, u32 ggml type, u64 offset into the data section); the data section, which starts at
the next multiple of `general.alignment` (default 32).
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from typing import Any

import numpy as np

MAGIC = b"GGUF"
# GGUF value type -> struct format of a scalar (8 = string and 9 = array are read separately)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml types whose tensor bytes `GGUFReader` views with their own dtype (the others as uint8 blocks)
_PLAIN = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64,
          28: np.float64}


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
  """One tensor of the file.

  Attributes:
    name: its GGUF name (`blk.0.attn_q.weight`).
    shape: dims innermost first, as the file lists them (NumPy's shape is the reverse).
    tensor_type: the ggml type id (`gguf.GGMLQuantizationType`).
    data: its bytes in the file, memory-mapped, shaped as `GGUFReader` shapes them: the typed values in
      NumPy order for plain types; for block types uint8 rows, the last axis the innermost dim's blocks.
  """

  name: str
  shape: tuple[int, ...]
  tensor_type: int
  data: np.ndarray


class GGUFFile:
  """A GGUF file opened read-only: `fields` (key -> Python value) and `tensors` (file order).

  Raises:
    ValueError: naming the file, when it is not a GGUF v2/v3 file or a value type is unknown.
  """

  def __init__(self, path: str):
    from gguf.constants import GGML_QUANT_SIZES  # noqa: PLC0415 (block sizes of every ggml type)

    self.path = path
    with open(path, "rb") as f:
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if self._map[:4] != MAGIC:
      raise ValueError(f"{path}: not a GGUF file (magic {self._map[:4]!r})")
    self._pos = 4
    version, n_tensors, n_fields = self._read("<I"), self._read("<Q"), self._read("<Q")
    if version not in (2, 3):
      raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    self.fields: dict[str, Any] = {}
    for _ in range(n_fields):
      key = self._string()
      self.fields[key] = self._value(self._read("<I"), key)
    infos = []
    for _ in range(n_tensors):
      name = self._string()
      dims = tuple(self._read("<Q") for _ in range(self._read("<I")))
      infos.append((name, dims, self._read("<I"), self._read("<Q")))
    align = int(self.fields.get("general.alignment", 32))
    start = -(-self._pos // align) * align
    whole = np.frombuffer(self._map, np.uint8)
    self.tensors: list[GGUFTensor] = []
    for name, dims, kind, offset in infos:
      block, size = GGML_QUANT_SIZES[kind]
      n_bytes = int(np.prod(dims, dtype=np.int64)) * size // block
      raw = whole[start + offset: start + offset + n_bytes]
      if len(raw) != n_bytes:
        raise ValueError(f"{path}: tensor {name!r} runs past the end of the file")
      rows = tuple(reversed(dims[1:]))  # NumPy order; blocks run along the innermost dim
      data = raw.view(_PLAIN[kind]).reshape(*rows, dims[0]) if kind in _PLAIN else raw.reshape(
        *rows, dims[0] // block * size)
      self.tensors.append(GGUFTensor(name, dims, kind, data))

  def _read(self, fmt: str) -> Any:
    (value,) = struct.unpack_from(fmt, self._map, self._pos)
    self._pos += struct.calcsize(fmt)
    return value

  def _string(self) -> str:
    n = self._read("<Q")
    text = self._map[self._pos: self._pos + n].decode("utf-8")
    self._pos += n
    return text

  def _value(self, kind: int, key: str) -> Any:
    if kind in _SCALARS:
      return self._read(_SCALARS[kind])
    if kind == _STRING:
      return self._string()
    if kind != _ARRAY:
      raise ValueError(f"{self.path}: field {key!r} has unknown GGUF value type {kind}")
    item, count = self._read("<I"), self._read("<Q")
    if item in _SCALARS and item != 7:  # a numeric array in one read
      dtype = np.dtype(_SCALARS[item])
      values = np.frombuffer(self._map, dtype, count, self._pos).tolist()
      self._pos += count * dtype.itemsize
      return values
    return [self._value(item, key) for _ in range(count)]


__all__ = ["GGUFFile", "GGUFTensor"]
