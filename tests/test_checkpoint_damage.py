"""Damaged checkpoints are detected at restore and the newest intact step is used instead."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.checkpoint import Checkpointer, DamagedCheckpointError, DamagedCheckpointWarning


def _state(step: int) -> dict[str, jax.Array]:
  key = jax.random.key(step)
  return {"w": jax.random.normal(key, (64, 64)), "mu": {"w": jax.random.normal(key, (64,)) * 1e-3}}


def _abstract() -> dict:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _two_steps(directory: pathlib.Path) -> None:
  with Checkpointer(directory, keep=3) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _state(step), data_state={"next_batch": step}, config={"lr": 0.1})


def _data_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The largest file of the state item: the OCDBT chunk holding the arrays' bytes."""
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(step_dir: pathlib.Path) -> None:
  f = _data_file(step_dir)
  raw = bytearray(f.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + 8] = bytes(b ^ 0xFF for b in raw[middle:middle + 8])
  f.write_bytes(bytes(raw))


def _truncate(step_dir: pathlib.Path) -> None:
  f = _data_file(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _zero(step_dir: pathlib.Path) -> None:
  f = _data_file(step_dir)
  f.write_bytes(bytes(f.stat().st_size))


def _empty_manifest(step_dir: pathlib.Path) -> None:
  for manifest in (step_dir / "state").rglob("manifest.ocdbt"):
    manifest.write_bytes(b"")


def _delete_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "_METADATA").unlink()


def _edit_data_position(step_dir: pathlib.Path) -> None:
  f = step_dir / "data" / "metadata"
  assert json.loads(f.read_text()) == {"next_batch": 2}
  f.write_text(json.dumps({"next_batch": 1}))  # another valid position


DAMAGE = {
  "byte_flip": _flip_bytes, "truncated": _truncate, "zeroed": _zero, "empty_manifest": _empty_manifest,
  "no_state_metadata": _delete_metadata, "edited_data_position": _edit_data_position,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_step_falls_back_to_the_previous(tmp_path, damage):
  _two_steps(tmp_path)
  DAMAGE[damage](tmp_path / "2")
  with Checkpointer(tmp_path, keep=3) as ckpt:
    with pytest.warns(DamagedCheckpointWarning, match=r"step 2 .*damaged"):
      state, data, config = ckpt.restore(_abstract())
    assert ckpt.restored_step == 1 and data == {"next_batch": 1} and config == {"lr": 0.1}
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))
    # The damaged step was moved aside (kept for inspection), so the run saves step 2 afresh.
    assert ckpt.all_steps() == [1]
    assert ckpt.save(2, _state(2), data_state={"next_batch": 2})
  assert [p.name.split("-")[:2] for p in tmp_path.glob("damaged-*")] == [["damaged", "2"]]
  with Checkpointer(tmp_path, read_only=True) as reader:
    assert reader.restore(_abstract())[1] == {"next_batch": 2}


def test_empty_step_folder_is_skipped(tmp_path):
  _two_steps(tmp_path)
  (tmp_path / "3").mkdir()  # e.g. a partial copy of a run folder
  with Checkpointer(tmp_path) as ckpt, pytest.warns(DamagedCheckpointWarning, match="step 3"):
    assert ckpt.restore(_abstract())[1] == {"next_batch": 2}
    assert ckpt.restored_step == 2


def test_non_finite_state_is_not_restored(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, _state(1), data_state={"next_batch": 1})
    poisoned = _state(2)
    poisoned["mu"]["w"] = poisoned["mu"]["w"].at[3].set(jnp.nan)
    ckpt.save(2, poisoned, data_state={"next_batch": 2})
    ckpt.wait()
    with pytest.warns(DamagedCheckpointWarning, match=r"step 2 .*'mu/w' holds non-finite"):
      assert ckpt.restore(_abstract())[1] == {"next_batch": 1}


def test_an_explicit_step_does_not_fall_back_and_a_reader_moves_nothing(tmp_path):
  _two_steps(tmp_path)
  _flip_bytes(tmp_path / "2")
  _flip_bytes(tmp_path / "1")
  with Checkpointer(tmp_path, read_only=True) as reader:
    with pytest.raises(DamagedCheckpointError, match="step 2"):
      reader.restore(_abstract(), step=2)
    with pytest.warns(DamagedCheckpointWarning), pytest.raises(DamagedCheckpointError, match="no intact"):
      reader.restore(_abstract())
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_a_changed_model_is_an_error_not_damage(tmp_path):
  _two_steps(tmp_path)
  wider = {"w": jax.ShapeDtypeStruct((64, 65), jnp.float32),
           "mu": {"w": jax.ShapeDtypeStruct((64,), jnp.float32)}}
  with Checkpointer(tmp_path) as ckpt, pytest.raises(ValueError, match=r"'w'.*\(64, 65\)"):
    ckpt.restore(wider)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]
