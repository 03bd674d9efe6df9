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


BUCKET = "gs://w2s-test-bucket"


def _put(fs: MemoryFileSystem, uri: str, data: bytes) -> None:
  with fs.open(uri, "wb") as f:
    f.write(data)


def test_gs_jsonl_and_parquet_data_files_are_read_and_errors_name_the_uri(gcs_in_memory, tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  from w2s_jax.data import jsonl, sft_sources, task_registry

  lines = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]
  _put(gcs_in_memory, f"{BUCKET}/data/train.jsonl", "\n".join(map(json.dumps, lines)).encode() + b"\n")
  records, stats = jsonl.read_records(f"{BUCKET}/data/train.jsonl", "sft")
  assert records == lines and stats.kept == 3
  sink = pa.BufferOutputStream()
  pq.write_table(pa.Table.from_pylist([{"prompt": "p", "answer": "7"}]), sink)
  _put(gcs_in_memory, f"{BUCKET}/data/tasks.parquet", sink.getvalue().to_pybytes())
  assert jsonl.read_records(f"{BUCKET}/data/tasks.parquet", "rl")[0] == [{"prompt": "p", "answer": "7"}]
  assert task_registry.kind(f"{BUCKET}/data/tasks.parquet") == "file"  # a config's data.task
  with pytest.raises(ValueError, match="does not exist"):
    task_registry.kind(f"{BUCKET}/data/none.jsonl")
  _put(gcs_in_memory, f"{BUCKET}/data/bad.jsonl", b'{"prompt": "q"}\n')
  with pytest.raises(jsonl.BadRecordError, match=f"{BUCKET}/data/bad.jsonl:1: field 'response'"):
    jsonl.read_records(f"{BUCKET}/data/bad.jsonl", "sft")
  # An SFT config's data.train_files / data.eval_files.
  pairs, info = sft_sources.SFT_CORPORA["jsonl"]("train", {"train_files": f"{BUCKET}/data/train.jsonl"})
  assert pairs == [("q0", "a0"), ("q1", "a1"), ("q2", "a2")] and info["records"] == 3
  assert list(tmp_path.iterdir()) == []


def test_gs_pipeline_folder_results_memo_and_run_log(gcs_in_memory, tmp_path):
  from w2s_jax.pipeline_shell import RunLog, finish, memo

  folder = f"{BUCKET}/pipe"
  out = finish(folder, {"accuracy": 0.75}, table="| a |")
  assert out == {"table": "| a |", "results": f"{folder}/results.json"}
  assert json.loads(gcs_in_memory.cat(f"{folder}/results.json")) == {"accuracy": 0.75}
  calls = []
  build = lambda: calls.append(1) or {"stage": len(calls)}
  assert memo(f"{folder}/stage.json", build) == memo(f"{folder}/stage.json", build) == {"stage": 1}
  assert calls == [1]  # the second call read the stored result
  log = RunLog(folder, "test_loss")
  log({"test_loss": 0.5})
  log({"test_loss": 0.25})
  assert [r["step"] for r in _records(gcs_in_memory.cat(f"{folder}/metrics.jsonl").decode())] == [1, 2]
  assert list(tmp_path.iterdir()) == []


def test_gs_rl_sft_folder_is_an_epath_and_its_config_is_checked_there(gcs_in_memory, tmp_path):
  from w2s_jax.config_files import load_config
  from w2s_jax.rl.sft_init import run_sft, sft_workdir

  config = load_config("grpo_tiny", "smoke")
  with config.unlocked():
    config.sft.workdir = f"{BUCKET}/shared_sft"
  folder = sft_workdir(config, "/unused")
  assert isinstance(folder, epath.Path) and str(folder) == f"{BUCKET}/shared_sft"
  assert str(sft_workdir(load_config("grpo_tiny", "smoke"), f"{BUCKET}/rl")) == f"{BUCKET}/rl/sft"
  _put(gcs_in_memory, f"{BUCKET}/shared_sft/config.json", json.dumps({"total_steps": -1}).encode())
  with pytest.raises(ValueError, match=f"{BUCKET}/shared_sft holds an SFT run with a different config"):
    run_sft(config, "/unused")  # refused from the folder's config.json, before any training
  assert list(tmp_path.iterdir()) == []
