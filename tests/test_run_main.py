"""`tests.helpers.run_main`: `w2s_jax.main` in the test process behaves as `python -m w2s_jax.main` does."""

import json
import os

import jax

from tests.helpers import run_main

SMOKE = "--config=configs/sft_tiny.py:smoke"
# A short SFT smoke (2 steps): what the runner does, not what SFT learns.
SHORT = ["--config.total_steps=2", "--config.log_every_steps=1", "--config.eval_every_steps=2",
         "--config.checkpoint_every_steps=2", "--config.data.train_size=32", "--config.data.eval_size=8"]


def test_exit_status_2_with_the_one_line_error_and_nothing_started(tmp_path):
  out = run_main([SMOKE, f"--workdir={tmp_path / 'run'}", "--config.batch_size=0"])
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "batch_size" in out.stderr
  assert not (tmp_path / "run").exists()


def test_help_exits_0_with_the_configs_on_stdout():
  out = run_main(["--help"])
  assert out.returncode == 0 and "sft_tiny" in out.stdout and "--allow_config_change" in out.stdout


def test_two_runs_in_a_row_leak_no_flag_and_capture_stdout(tmp_path, monkeypatch):
  monkeypatch.setenv("W2S_RUN_MAIN_PROBE", "outer")
  first = run_main([SMOKE, f"--workdir={tmp_path / 'a'}", *SHORT, "--config.optimizer.lr=0.001",
                    "--config.model.lora.rank=2"], env={"W2S_RUN_MAIN_PROBE": None, "W2S_JAX_PROBE2": "x"})
  assert first.returncode == 0, first.stderr[-3000:]
  summary = json.loads(first.stdout.strip().splitlines()[-1])  # main's last line: the run's summary
  assert summary["final_step"] == 2 and "loss" in summary["last"]
  assert os.environ["W2S_RUN_MAIN_PROBE"] == "outer" and "W2S_JAX_PROBE2" not in os.environ
  # The second run gives neither override: it must train with the config file's values.
  second = run_main([SMOKE, f"--workdir={tmp_path / 'b'}", *SHORT])
  assert second.returncode == 0, second.stderr[-3000:]
  a, b = (json.loads((tmp_path / d / "config.json").read_text()) for d in "ab")
  assert a["optimizer"]["lr"] == 0.001 and a["model"]["lora"]["rank"] == 2
  assert b["optimizer"]["lr"] == 0.003 and b["model"]["lora"]["rank"] == 0
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert b["total_steps"] == 2 and [json.loads(x)["step"] for x in lines] == [1, 2]
  # A usage error after a good run still reports, and the flags it parsed do not reach the next run.
  assert run_main([SMOKE, f"--workdir={tmp_path / 'c'}", "--config.totl_steps=6"]).returncode == 2
  assert run_main(["--config.total_steps=2"]).returncode == 2  # no --config/--workdir left from before
  assert len(jax.devices()) == 8  # the worker's devices are back


def test_an_exception_is_status_1_with_its_traceback(tmp_path):
  # JAX's devices are fixed once it started: `cpu_devices` raises in `main` here (a subprocess test's job).
  out = run_main([SMOKE, f"--workdir={tmp_path / 'run'}", "--config.cpu_devices=2"])
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" in out.stderr and "jax_num_cpu_devices" in out.stderr
