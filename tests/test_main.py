"""The entry point as users run it: real kills, real multi-process runs, the command line's contract.

The uninterrupted run, the kills and their reruns, `--help`, one usage error and the two-process run are real
`python -m w2s_jax.main` subprocesses; the other runs go through `tests.helpers.run_main` (`main` inside the
test process). Bit-identical comparisons are between subprocesses only (see `run_main`).
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_main

SMOKE = ["-m", "w2s_jax.main", "--config=configs/sft_tiny.py:smoke"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  return env


def _cmd(workdir, *extra):
  return [sys.executable, *SMOKE, f"--workdir={workdir}", *extra]


def _main(workdir, *extra):
  """The smoke command with `extra` flags, run by `run_main` (in this process)."""
  return run_main([*SMOKE[2:], f"--workdir={workdir}", *extra])


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
  out = _main(tmp_path, "--config.total_steps=6", "--config.checkpoint_every_steps=2",
              "--config.keep_checkpoints=2")
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
def test_sigterm_saves_then_exits_then_kill_9_and_rerun_resume_bit_identically(uninterrupted, tmp_path):
  # One run folder for both interruptions (one process start fewer than a fresh run per signal): SIGTERM
  # at line 13 saves off-schedule and exits 143; the resumed run is killed with -9 at an arbitrary moment
  # (past that saved step); the rerun then resumes from the last complete checkpoint and every step's loss
  # equals the uninterrupted run's.
  reference = _losses(uninterrupted[0])
  proc = _run_until(tmp_path, 13, signal.SIGTERM)
  assert proc.returncode == 143, proc.stderr.read()[-2000:]
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  last = max(_losses(tmp_path))
  assert steps[-1] == last and last % 10 != 0, (steps, last)  # saved where it stopped, off-schedule
  kill_at = random.Random().randint(last + 2, 36)  # an arbitrary moment of the resumed run
  proc = _run_until(tmp_path, kill_at, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  out = subprocess.run(_cmd(tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert _losses(tmp_path) == reference, f"killed after {kill_at} lines"  # exact float equality, every step


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


def _usage(tmp_path, *extra, workdir=None):
  return _main(tmp_path if workdir is None else workdir, *extra)


@pytest.mark.parametrize("override,key", [
  ("--config.batch_size=0", "batch_size"), ("--config.batch_size=-2", "batch_size"),
  ("--config.checkpoint_every_steps=0", "checkpoint_every_steps"),
  ("--config.log_every_steps=0", "log_every_steps"), ("--config.eval_every_steps=-1", "eval_every_steps"),
  ("--config.total_steps=0", "total_steps"), ("--config.total_steps=-5", "total_steps"),
  ("--config.optimizer.lr=inf", "optimizer.lr"), ("--config.optimizer.lr=nan", "optimizer.lr"),
  ("--config.optimizer.lr=0", "optimizer.lr"), ("--config.grad_accum_steps=0", "grad_accum_steps"),
  ("--config.totl_steps=6", "totl_steps"),
])
def test_invalid_values_are_one_line_usage_errors(tmp_path, override, key):
  # Before: ZeroDivisionError deep in the pipeline, a failure after step 1, exit 0 having trained
  # nothing, NaN weights, or a 59-line traceback.
  out = _usage(tmp_path / "run", override)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and key in out.stderr, out.stderr
  assert not (tmp_path / "run").exists()  # nothing was started


def test_empty_workdir_is_refused(tmp_path):
  out = _usage(tmp_path, workdir="")
  assert out.returncode == 2 and "--workdir" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_help_lists_the_configs_and_exits_0(tmp_path):
  out = subprocess.run([sys.executable, "-m", "w2s_jax.main", "--help"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "sft_tiny" in out.stdout and "quickstart" in out.stdout and "--allow_config_change" in out.stdout


def test_resume_under_changed_settings_is_refused_and_config_json_untouched(tmp_path):
  # Before: a changed optimizer.lr or batch_size continued silently in the same metrics file.
  from w2s_jax.config_files import load_config, write_config

  write_config(load_config("sft_tiny", "smoke"), tmp_path)  # as a run of the smoke command leaves it,
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 5.5}\n')  # with a logged step to resume
  before = (tmp_path / "config.json").read_bytes()
  out = _usage(tmp_path, "--config.optimizer.lr=0.001", "--config.batch_size=4", "--config.log_every_steps=5")
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]
  assert "optimizer.lr: 0.003 -> 0.001" in out.stderr and "batch_size: 8 -> 4" in out.stderr
  assert "log_every_steps" not in out.stderr.split("(only")[0]  # a logging cadence may change
  assert "--allow_config_change" in out.stderr
  assert (tmp_path / "config.json").read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.jsonl"]


def test_a_folder_without_progress_is_no_resume(tmp_path):
  # A run that stopped before training (e.g. "raise data.max_prompt_len to at least 403") left only its
  # config.json: the corrected rerun must not be refused as a changed resume. A saved step or a logged
  # metric (here or in a sub-run's folder, e.g. an RL run's SFT start) is progress.
  from w2s_jax.config_files import has_progress, load_config, write_config

  write_config(load_config("sft_tiny", "smoke"), tmp_path)
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "metrics.jsonl").write_text("")
  assert not has_progress(tmp_path) and not has_progress(tmp_path / "absent")
  (tmp_path / "sft" / "checkpoints" / "20").mkdir(parents=True)
  assert has_progress(tmp_path)
  other = tmp_path / "other"
  other.mkdir()
  (other / "metrics.jsonl").write_text('{"step": 1, "loss": 5.5}\n')
  assert has_progress(other)


def test_allow_config_change_resumes_and_records_the_new_config(uninterrupted, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted[0], workdir)
  out = _usage(tmp_path, "--config.optimizer.lr=0.001", "--allow_config_change", workdir=workdir)
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads((workdir / "config.json").read_text())["optimizer"]["lr"] == 0.001


@pytest.mark.slow
def test_damaged_latest_checkpoint_resumes_from_the_previous_one(uninterrupted, tmp_path):
  # Before: 8 flipped bytes in the latest checkpoint loaded silently (a NaN Adam moment, then NaN weights).
  reference = _losses(uninterrupted[0])
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted[0], workdir)
  data_file = max((p for p in (workdir / "checkpoints" / "40" / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
  raw = bytearray(data_file.read_bytes())
  raw[len(raw) // 2:len(raw) // 2 + 8] = b"\xff" * 8
  data_file.write_bytes(bytes(raw))
  out = subprocess.run(_cmd(workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checkpoint step 40" in out.stderr and "damaged" in out.stderr, out.stderr[-3000:]
  assert _losses(workdir) == reference  # resumed at 30, bit-identical from there
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [20, 30, 40] and list((workdir / "checkpoints").glob("damaged-40-*"))


def test_every_config_names_a_task_main_runs():
  # A config whose task `main` does not know is a README command that cannot work (delta_learning once was).
  from tests.helpers import load_config
  from w2s_jax.config_files import config_names
  from w2s_jax.main import PIPELINES, TASKS

  unknown = {}
  for name in config_names():
    for arg in (None, "smoke"):
      task = load_config(name, arg).get("task")
      if task not in PIPELINES and task not in TASKS:
        unknown[f"{name}:{arg}"] = task
  assert not unknown


def test_old_key_flag_names_the_new_key(tmp_path):
  out = _usage(tmp_path / "run", "--config.data.n_test=5")
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr == "error: config.data.n_test was renamed config.data.eval_size\n"
  assert not (tmp_path / "run").exists()


def test_old_key_in_a_config_file_names_the_new_key(tmp_path):
  # A user's config written before the rename: stops before any work, naming the key to use.
  old = tmp_path / "old_sft.py"
  old.write_text("from w2s_jax.config_files import load_config\n\n\ndef get_config(arg=None):\n"
                 "  c = load_config('sft_tiny', 'smoke')\n  c.data.test_size = 5\n  return c\n")
  out = run_main([f"--config={old}", f"--workdir={tmp_path / 'run'}"])
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr == "error: config.data.test_size was renamed config.data.eval_size\n"
  assert not (tmp_path / "run").exists()
