"""`w2s_jax.train.tb_events`: event files read back by tensorboardX's own protocol buffers and CRC-32C.

tensorboardX (the `test` extra; it imports torch when torch is there) is the reference here:
its generated `Event` class parses each record, and its CRC-32C checks each record's framing.
"""

import os
import struct

import pytest
from tensorboardX.crc32c import crc32c as reference_crc32c
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

from w2s_jax.train import tb_events
from w2s_jax.train.metrics_log import MetricsWriter


def _masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read(path) -> list[Event]:
  """Every record of an event file, its two CRCs checked against tensorboardX's CRC-32C."""
  raw, events, at = path.read_bytes(), [], 0
  while at < len(raw):
    header = raw[at:at + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", raw[at + 8:at + 12])[0] == _masked(reference_crc32c(header))
    data = raw[at + 12:at + 12 + length]
    assert struct.unpack("<I", raw[at + 12 + length:at + 16 + length])[0] == _masked(reference_crc32c(data))
    events.append(Event.FromString(data))
    at += 16 + length
  return events


def test_crc32c_check_value():
  assert tb_events.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
  assert tb_events.crc32c(b"") == 0


@pytest.mark.parametrize("step", [0, 7, 2**40])
def test_scalar_event_bytes_equal_protobufs(step):
  value = Summary.Value(tag="eval/loss", simple_value=1.25)
  want = Event(wall_time=1.5e9 + 0.25, step=step, summary=Summary(value=[value]))
  got = tb_events.event(1.5e9 + 0.25, step, scalar=("eval/loss", 1.25))
  assert got == want.SerializeToString()
  start = Event(wall_time=2.0, step=step, session_log=SessionLog(status=SessionLog.START))
  assert tb_events.event(2.0, step, session_start=True) == start.SerializeToString()
  version = Event(wall_time=3.0, file_version="brain.Event:2")
  assert tb_events.event(3.0, 0, file_version="brain.Event:2") == version.SerializeToString()


def test_writer_file_reads_back_with_the_purge_marker(tmp_path):
  w = tb_events.EventWriter(tmp_path / "tb", purge_step=3)
  for step, loss in ((4, 2.5), (5, 0.125)):
    w.add_scalar("loss", loss, step)
  w.add_scalar("tokens", 12, 5)
  w.close()
  (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
  first, start, *scalars = _read(path)
  assert first.file_version == "brain.Event:2" and first.step == 3
  assert start.session_log.status == SessionLog.START and start.step == 3
  got = [(e.step, e.summary.value[0].tag, e.summary.value[0].simple_value) for e in scalars]
  assert got == [(4, "loss", 2.5), (5, "loss", 0.125), (5, "tokens", 12.0)]
  assert all(e.wall_time > 1.6e9 for e in (first, start, *scalars))


def test_metrics_writer_events_match_its_jsonl(tmp_path):
  w = MetricsWriter(tmp_path)
  w.write(1, {"loss": 3.0, "lr": 0.5, "name": "x"})
  w.write(2, {"loss": 1.5, "lr": 0.25})
  w.close()
  (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  first, *scalars = _read(path)
  assert first.file_version == "brain.Event:2" and not first.HasField("session_log")
  got = [(e.step, e.summary.value[0].tag, e.summary.value[0].simple_value) for e in scalars]
  assert got == [(1, "loss", 3.0), (1, "lr", 0.5), (2, "loss", 1.5), (2, "lr", 0.25)]


def test_gs_folder_is_written_whole_through_epath(monkeypatch, tmp_path):
  # `gs://` served by fsspec's in-memory filesystem (as tests/test_remote_paths.py does): no append, no
  # local file; what the object holds after each flush is a complete event file.
  import importlib

  from etils.epath import backend
  from fsspec.implementations.memory import MemoryFileSystem

  monkeypatch.chdir(tmp_path)
  monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, "gcs", MemoryFileSystem)
  backend.fsspec_backend._get_filesystem.cache_clear()
  try:
    w = tb_events.EventWriter("gs://w2s-test-bucket/tb_run/tensorboard", purge_step=None)
    w.add_scalar("loss", 2.0, 1)
    w.flush()
    path = w.path
    assert os.fspath(path).startswith("gs://w2s-test-bucket/tb_run/tensorboard/events.out.tfevents.")
    assert [e.step for e in _read(path)] == [0, 1]
    w.add_scalar("loss", 1.0, 2)
    w.close()
    assert [e.step for e in _read(path)] == [0, 1, 2]
    assert not list(tmp_path.iterdir())  # nothing written to the working folder
  finally:
    for key in [k for k in MemoryFileSystem.store if "w2s-test-bucket/tb_run" in k]:
      del MemoryFileSystem.store[key]
    backend.fsspec_backend._get_filesystem.cache_clear()
