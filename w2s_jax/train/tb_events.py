"""TensorBoard event files of scalars, written by hand: no TensorFlow, tensorboardX or torch imported.

An event file (`events.out.tfevents.*`, what `tensorboard --logdir` reads) is a sequence of TFRecord
records, each one `Event` protocol buffer (tensorflow/core/util/event.proto):

- record: `uint64 length`, `uint32 masked_crc32c(length)`, `data`, `uint32 masked_crc32c(data)`, all
  little-endian; masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2³², c = CRC-32C(x).
- `Event`: wall_time (field 1, double), step (2, int64), file_version (3, string), summary (5, message),
  session_log (7, message); `Summary`: value (1, repeated message); `Summary.Value`: tag (1, string),
  simple_value (2, float); `SessionLog`: status (1, enum; START = 1).

A file starts with a `file_version` event ("brain.Event:2"). A resumed run (`purge_step` S) also writes a
SessionLog START at step S: TensorBoard then drops the events of steps >= S that an earlier, killed run
wrote after the checkpoint resumed from. Folders are `etils.epath` paths; an object store (`gs://...`)
cannot append, so there the file's bytes are kept and the whole object is written at `flush()`/`close()`.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from etils import epath

from w2s_jax.atomic_file import is_remote

FILE_VERSION = "brain.Event:2"
_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reversed
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as TFRecord files use it."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
  crc = crc32c(data)
  return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
  """`data` framed as one TFRecord record (length, its masked CRC, data, the data's masked CRC)."""
  length = struct.pack("<Q", len(data))
  return length + _masked_crc(length) + data + _masked_crc(data)


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # an int64 is written as its two's-complement uint64
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2): a string or an embedded message."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, file_version: str | None = None,
          scalar: tuple[str, float] | None = None, session_start: bool = False) -> bytes:
  """One serialized `Event`: its time and step, and a file version, one scalar or a session start."""
  out = b"\x09" + struct.pack("<d", wall_time)  # field 1, wire type 1 (64-bit)
  if step:
    out += b"\x10" + _varint(step)  # field 2, varint
  if file_version is not None:
    out += _bytes_field(3, file_version.encode())
  if scalar is not None:
    tag, value = scalar
    value_msg = _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)  # field 2, 32-bit
    out += _bytes_field(5, _bytes_field(1, value_msg))
  if session_start:
    out += _bytes_field(7, b"\x08\x01")  # session_log: SessionLog.status = START
  return out


class EventWriter:
  """Writes scalars to a new event file in `logdir` (the `add_scalar`/`flush`/`close` of a summary writer)."""

  _count = 0

  def __init__(self, logdir: epath.PathLike, *, purge_step: int | None = None):
    self.dir = epath.Path(logdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    EventWriter._count += 1
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{self._count}"
    self.path = self.dir / name
    self._remote = is_remote(self.path)
    self._data = bytearray()  # a remote file's bytes, rewritten whole at each flush
    self._file = None if self._remote else self.path.open("wb")
    now = time.time()
    self._add(event(now, purge_step or 0, file_version=FILE_VERSION))
    if purge_step:
      self._add(event(now, purge_step, session_start=True))
    self.flush()

  def _add(self, data: bytes) -> None:
    if self._remote:
      self._data += tfrecord(data)
    else:
      self._file.write(tfrecord(data))

  def add_scalar(self, tag: str, value: float, step: int) -> None:
    self._add(event(time.time(), int(step), scalar=(tag, float(value))))

  def flush(self) -> None:
    if self._remote:
      self.path.write_bytes(bytes(self._data))
    else:
      self._file.flush()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
