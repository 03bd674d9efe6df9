"""Per-process data on two real `jax.distributed` CPU processes: each reads half of every batch, and the
assembled global batch equals the batch one process builds alone; an SFT run through `python -m
w2s_jax.main` on two processes trains like one process and resumes exactly."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_config
from w2s_jax import sharding as shd
from w2s_jax.data import pipeline
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.main import TASKS
from w2s_jax.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
B, L, STEPS = 8, 24, 3

WORKER = """
import sys
import jax
import numpy as np
pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
from jax.experimental import multihost_utils
from tests.data.test_process_data import B, L, STEPS, make_data
from w2s_jax import sharding as shd
from w2s_jax.data import pipeline
mesh = shd.make_mesh({"data": -1})
rows = pipeline.process_rows(mesh, B)
data = make_data(rows)
n = data.stats["train"].rows
saved = {"rows": np.array([rows.start, rows.stop]), "devices": np.array(jax.device_count())}
for i in range(STEPS):
  local = data.train[i]
  saved[f"idx{i}"] = pipeline.batch_indices(n, B, seed=3, rows=rows)[i]
  whole = shd.global_batch(local, mesh, B)
  for k, v in local.items():
    saved[f"local{i}_{k}"] = v
    saved[f"global{i}_{k}"] = multihost_utils.process_allgather(whole[k], tiled=True)
saved["eval_local"] = data.eval_batches[0]["inputs"]
np.savez(out, **saved)
jax.distributed.shutdown()
"""


def make_data(process=None) -> pipeline.TokenData:
  """Token data of 40 short prompt/response pairs (byte tokens), B = 8 rows of L = 24 a batch."""
  pairs = [(f"q{i} + {i % 7}", f"= {i + i % 7}") for i in range(40)]
  return pipeline.token_data(pairs, pairs[::-1], ByteTokenizer(), seq_len=L, batch_size=B, eval_batches=2,
                             seed=3, process=process)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_process_rows_on_one_process_is_the_whole_batch():
  mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert pipeline.process_rows(mesh, B) == slice(0, B)
  with pytest.raises(ValueError, match="batch_size 6 does not divide over the mesh's data x fsdp = 4"):
    pipeline.process_rows(mesh, 6)


def test_a_process_share_is_its_rows_of_each_global_batch():
  whole, half = make_data(), make_data(slice(4, 8))
  for i in range(STEPS):
    for k in whole.train[i]:
      np.testing.assert_array_equal(half.train[i][k], whole.train[i][k][4:8])
  np.testing.assert_array_equal(half.eval_batches[1]["targets"], whole.eval_batches[1]["targets"][4:8])


@pytest.mark.parametrize("objective", [{"name": "dpo", "beta": 0.1}, {"name": "kto", "beta": 0.1}])
def test_a_process_share_of_preference_batches_is_its_rows(objective):
  """[2B] preference rows (B chosen, then the B rejected of the same prompts; KTO: 2B examples): a process
  holding rows 2..6 of 8 (the last two chosen and first two rejected) gathers exactly those rows."""
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train import preference_tasks as pt

  tok = ByteTokenizer()
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  pairs = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i * 3}"} for i in range(12)]
  unpaired = [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"} for p in pairs
              for k in ("chosen", "rejected")]
  records = {"train": {"pairs": pairs, "unpaired": unpaired}, "eval": {"pairs": pairs, "unpaired": []}}
  kw = dict(objective=objective, batch_size=4, seq_len=24, eval_batches=2, seed=1, eval_at_start=False)
  whole = pt.records_setup(records, cfg, graphdef, params, tok, **kw)
  share = pt.records_setup(records, cfg, graphdef, params, tok, process=slice(2, 6), **kw)
  assert whole.global_rows == share.global_rows == 8
  for i in range(3):
    got, want = share.train_batches[i], whole.train_batches[i]
    assert sorted(got) == sorted(want)
    for k in want:
      assert len(got[k]) == 4
      np.testing.assert_array_equal(got[k], want[k][2:6])
  for got, want in zip(share.eval_batches, whole.eval_batches, strict=True):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k][2:6])


@pytest.mark.slow
def test_two_processes_each_read_half_and_assemble_the_single_process_batch(tmp_path):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(tmp_path / f"p{i}.npz")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  got = [np.load(tmp_path / f"p{i}.npz") for i in range(2)]
  assert [int(g["devices"]) for g in got] == [4, 4]  # one mesh over both processes' devices
  assert [tuple(g["rows"]) for g in got] == [(0, 4), (4, 8)]
  ref = make_data()  # this (single) process builds every batch whole
  n = ref.stats["train"].rows
  for i in range(STEPS):
    idx = [got[p][f"idx{i}"] for p in range(2)]
    assert len(idx[0]) == len(idx[1]) == B // 2 and not set(idx[0]) & set(idx[1])  # half each, disjoint
    np.testing.assert_array_equal(np.concatenate(idx), pipeline.batch_indices(n, B, seed=3)[i])
    for k, want in ref.train[i].items():
      for p in range(2):
        np.testing.assert_array_equal(got[p][f"local{i}_{k}"], want[4 * p:4 * p + 4])
        np.testing.assert_array_equal(got[p][f"global{i}_{k}"], want)
  np.testing.assert_array_equal(np.concatenate([g["eval_local"] for g in got]), ref.eval_batches[0]["inputs"])


# The SFT smoke, short: 6 steps of B = 8 rows over a 2-device data mesh, evaluated and saved every 3 steps.
SFT = {"total_steps": 6, "checkpoint_every_steps": 3, "eval_every_steps": 3, "mesh.data": 2,
       "data.train_size": 200, "data.eval_size": 40}


def _records(path: Path) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def _run_two_processes(workdir: Path) -> None:
  port = _free_port()
  args = [f"--config.{k}={v}" for k, v in SFT.items()] + [
    "--config.distributed.num_processes=2", f"--config.distributed.coordinator_address=localhost:{port}",
    "--config.cpu_devices=1"]
  procs = [subprocess.Popen([sys.executable, "-m", "w2s_jax.main", "--config=configs/sft_tiny.py:smoke",
                             f"--workdir={workdir}", *args, f"--config.distributed.process_id={i}"],
                            cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_two_process_sft_reads_half_each_trains_like_one_process_and_resumes(tmp_path):
  c = load_config("sft_tiny", "smoke")
  with c.unlocked():
    c.update_from_flattened_dict(SFT)
  train(c, tmp_path / "one", TASKS["sft"](c))  # one process, 2 of this test's 8 CPU devices
  one = _records(tmp_path / "one" / "metrics.jsonl")

  two = tmp_path / "two"
  _run_two_processes(two)
  lead, other = _records(two / "metrics.jsonl"), _records(two / "metrics.process1.jsonl")
  assert sorted(lead) == sorted(other) == sorted(one) == [1, 2, 3, 4, 5, 6]
  assert [one[s]["process_batch_rows"] for s in one] == [8] * 6
  for recs in (lead, other):  # each process gathers 4 of every batch's 8 rows
    assert [recs[s]["process_batch_rows"] for s in recs] == [4] * 6
  for s in one:
    assert lead[s]["loss"] == other[s]["loss"]  # one global step, the same numbers on both processes
    np.testing.assert_allclose(lead[s]["loss"], one[s]["loss"], rtol=1e-5, atol=1e-6)
  for s in (3, 6):  # the held-out batches are read per process too
    np.testing.assert_allclose(lead[s]["eval_loss"], one[s]["eval_loss"], rtol=1e-5, atol=1e-6)
  assert lead[6]["loss"] < lead[1]["loss"]

  # Resume from step 3: the last checkpoint removed, the same command continues with batch 3 on each process.
  assert sorted(int(p.name) for p in (two / "checkpoints").iterdir()) == [3, 6]
  shutil.rmtree(two / "checkpoints" / "6")
  _run_two_processes(two)
  resumed = _records(two / "metrics.jsonl")
  assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
  assert [resumed[s]["loss"] for s in resumed] == [lead[s]["loss"] for s in lead]  # exact
  assert resumed[6]["eval_loss"] == lead[6]["eval_loss"]
