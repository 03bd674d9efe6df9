"""The entry point as users run it: real subprocesses, real kills, real multi-process runs."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

SMOKE = ["-m", "w2s_jax.main", "--config=configs/sft_tiny.py:smoke"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  return env


def _cmd(workdir, *extra):
  return [sys.executable, *SMOKE, f"--workdir={workdir}", *extra]


def _losses(workdir: Path, name="metrics.jsonl"):
  lines = (workdir / name).read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def _lines(workdir: Path) -> int:
  p = workdir / "metrics.jsonl"
  return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  out = subprocess.run(_cmd(workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_smoke_run_writes_everything_and_learns(uninterrupted):
  workdir, out = uninterrupted
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 41))
  assert losses[40] < losses[1] - 2.0, losses
  config = json.loads((workdir / "config.json").read_text())
  assert config["total_steps"] == 40 and config["model"]["preset"] == "tiny"
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [20, 30, 40]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["final_step"] == 40 and summary["eval"]["eval_loss"] < 4.0
  assert "it/s" in out.stderr or "step/s" in out.stderr  # the progress bar


def test_config_overrides(tmp_path):
  out = subprocess.run(
    _cmd(tmp_path, "--config.total_steps=6", "--config.checkpoint_every_steps=2",
         "--config.keep_checkpoints=2"),
    cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(_losses(tmp_path)) == list(range(1, 7))
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4, 6]


def test_unknown_override_fails_loudly(tmp_path):
  out = subprocess.run(_cmd(tmp_path, "--config.totl_steps=6"), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "totl_steps" in out.stderr


def _run_until(workdir, min_lines, sig):
  proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while _lines(workdir) < min_lines and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
  proc.send_signal(sig)
  proc.wait(timeout=120)
  return proc


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_bit_identically(uninterrupted, tmp_path):
  reference = _losses(uninterrupted[0])
  kill_at = random.Random().randint(12, 36)  # an arbitrary moment, past the first checkpoint
  proc = _run_until(tmp_path, kill_at, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  out = subprocess.run(_cmd(tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  resumed = _losses(tmp_path)
  assert resumed == reference, f"killed after {kill_at} lines"  # exact float equality, every step


@pytest.mark.slow
def test_sigterm_saves_then_exits_and_resumes(uninterrupted, tmp_path):
  reference = _losses(uninterrupted[0])
  proc = _run_until(tmp_path, 13, signal.SIGTERM)
  assert proc.returncode == 143, proc.stderr.read()[-2000:]
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  last = max(_losses(tmp_path))
  assert steps[-1] == last and last % 10 != 0, (steps, last)  # saved where it stopped, off-schedule
  out = subprocess.run(_cmd(tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert _losses(tmp_path) == reference


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed_agree(tmp_path):
  port = _free_port()
  procs = [
    subprocess.Popen(
      _cmd(tmp_path, "--config.total_steps=4", "--config.eval_every_steps=0",
           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
           f"--config.distributed.coordinator_address=localhost:{port}", "--config.cpu_devices=2"),
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  lead, other = _losses(tmp_path), _losses(tmp_path, "metrics.process1.jsonl")
  assert sorted(lead) == [1, 2, 3, 4] and lead == other
  assert lead[4] < lead[1]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4]
