"""`write_atomic`: the new content appears whole, or the old file stays."""

import os

import pytest

from w2s_jax.atomic_file import write_atomic


def test_writes_text_as_utf8_and_bytes_as_given(tmp_path):
  text_file = write_atomic(tmp_path / "sub" / "a.txt", "héllo\n")
  assert text_file.read_bytes() == "héllo\n".encode()
  write_atomic(text_file, b"\x00\xff")
  assert text_file.read_bytes() == b"\x00\xff"
  assert sorted(p.name for p in text_file.parent.iterdir()) == ["a.txt"]  # no temporary file left


def test_a_failed_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  path.write_text("old")

  def fail(src, dst):
    raise OSError("disk vanished")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk vanished"):
    write_atomic(path, "new" * 1000)
  assert path.read_text() == "old"
