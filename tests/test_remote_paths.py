"""Run folders through `etils.epath`: a local folder through the same code, and a `gs://` workdir routed
through epath's fsspec backend. No real Cloud Storage is reached here: for the `gs://` test the fixture maps
fsspec's `gcs` protocol onto fsspec's own in-memory filesystem, so what is exercised is this package's
path handling (no `os.path`/`open()` on the URI, no append) down to epath and fsspec, not GCS itself."""

import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from etils.epath import backend
from fsspec.implementations.memory import MemoryFileSystem

from w2s_jax.checkpoint import Checkpointer, checkpoint_dir
from w2s_jax.train import metrics_log
from w2s_jax.train.metrics_log import MetricsWriter


@pytest.fixture
def gcs_in_memory(monkeypatch, tmp_path):
  """`gs://` paths served by fsspec's MemoryFileSystem; the working folder is an empty tmp folder."""
  monkeypatch.chdir(tmp_path)
  registry = importlib.import_module("fsspec.registry")._registry  # fsspec's protocol -> class table
  monkeypatch.setitem(registry, "gcs", MemoryFileSystem)  # restored (gcsfs, when installed) after the test
  backend.fsspec_backend._get_filesystem.cache_clear()
  yield MemoryFileSystem()
  for key in [k for k in MemoryFileSystem.store if k.startswith("gs://w2s-test-bucket/")]:
    del MemoryFileSystem.store[key]
  backend.fsspec_backend._get_filesystem.cache_clear()


def _records(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines()]


def test_gs_workdir_metrics_go_through_epath_and_resume(gcs_in_memory, tmp_path):
  workdir = "gs://w2s-test-bucket/run"
  w = MetricsWriter(workdir, tensorboard=False)
  assert str(w.path) == "gs://w2s-test-bucket/run/metrics.jsonl"
  for step, loss in [(1, 4.0), (2, 3.0), (3, 2.5)]:
    w.write(step, {"loss": loss})
  w.close()
  stored = gcs_in_memory.cat("gs://w2s-test-bucket/run/metrics.jsonl").decode()
  assert _records(stored) == [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0}, {"step": 3, "loss": 2.5}]
  # Resume from a checkpoint at step 2: step 3's record goes, and the new one follows step 2's.
  w = MetricsWriter(workdir, start_step=2, tensorboard=False)
  assert w.kept == 2
  w.write(3, {"loss": 2.0})
  w.close()
  text = epath.Path(workdir, "metrics.jsonl").read_text()
  assert _records(text) == [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0}, {"step": 3, "loss": 2.0}]
  assert list(tmp_path.iterdir()) == []  # nothing written to a local "gs:" folder


def test_remote_writer_uploads_whole_file_at_most_every_interval(gcs_in_memory, monkeypatch):
  monkeypatch.setattr(metrics_log, "REMOTE_FLUSH_S", 3600.0)
  w = MetricsWriter("gs://w2s-test-bucket/run2", tensorboard=False)
  w.write(1, {"loss": 1.0})
  assert not gcs_in_memory.exists("gs://w2s-test-bucket/run2/metrics.jsonl")  # not due yet
  w.flush()
  stored = gcs_in_memory.cat("gs://w2s-test-bucket/run2/metrics.jsonl").decode()
  assert _records(stored) == [{"step": 1, "loss": 1.0}]
  w.close()


def test_checkpoint_dir_keeps_uris_and_makes_local_folders_absolute(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert str(checkpoint_dir("gs://bucket/run/checkpoints")) == "gs://bucket/run/checkpoints"
  assert str(checkpoint_dir("s3://bucket/ck")) == "s3://bucket/ck"
  assert str(checkpoint_dir("run/checkpoints")) == str(tmp_path / "run" / "checkpoints")


def test_local_folder_given_as_epath_saves_restores_and_resumes_metrics(tmp_path):
  folder = epath.Path(tmp_path) / "run"
  state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "step": jnp.int32(7)}
  with Checkpointer(folder / "checkpoints", async_save=False) as ckpt:
    assert ckpt.save(7, state, data_state={"next_batch": 7})
  with Checkpointer(folder / "checkpoints", read_only=True) as ckpt:
    got, data, _ = ckpt.restore(state)
  np.testing.assert_array_equal(got["w"], [[0, 1, 2], [3, 4, 5]])
  assert int(got["step"]) == 7 and data == {"next_batch": 7}
  w = MetricsWriter(folder, tensorboard=False)
  w.write(1, {"loss": 2.0})
  w.write(2, {"loss": 1.0})
  w.close()
  w = MetricsWriter(folder, start_step=1, tensorboard=False)
  w.write(2, {"loss": 0.5})
  w.close()
  assert _records((tmp_path / "run" / "metrics.jsonl").read_text()) == [{"step": 1, "loss": 2.0},
                                                                       {"step": 2, "loss": 0.5}]


def test_gs_workdir_config_json_and_progress_go_through_epath(gcs_in_memory, tmp_path):
  from w2s_jax.config_files import changed_keys, has_progress, load_config, write_config

  workdir = "gs://w2s-test-bucket/run3"
  config = load_config("sft_tiny", "smoke")
  assert not has_progress(workdir)
  write_config(config, workdir)
  assert json.loads(gcs_in_memory.cat(f"{workdir}/config.json"))["seed"] == config.seed
  assert not has_progress(workdir)  # a config alone is no progress
  MetricsWriter(workdir, tensorboard=False).close()
  assert not has_progress(workdir)  # nor an empty metrics file
  w = MetricsWriter(workdir, tensorboard=False)
  w.write(1, {"loss": 1.0})
  w.close()
  assert has_progress(workdir)
  with config.unlocked():
    config.seed = config.seed + 1
  assert changed_keys(config, workdir) == [("seed", config.seed - 1, config.seed)]
  assert list(tmp_path.iterdir()) == []
