"""Tasks the library never picked, through `w2s_jax.main`: reasoning-gym tasks by name through the SFT and RL
smokes (with only the length overrides the errors name), and the README's own-task example (its command, a
real subprocess); the W2S sweep of each task in this process (through `main`: the user-file task at the end).

Runs other than the README's command go through `tests.helpers.run_main` (`main` inside this process)."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, load_config, run_main

TASKS = ["countdown", "leg_counting", "spell_backward", "word_sorting", "family_relationships"]
# Fewer problems and steps than the smoke args, only so the ten runs stay a few minutes on 2 cores.
FAST = {
  "grpo_tiny": ["--config.data.train_size=48", "--config.sft.total_steps=6", "--config.total_steps=2",
                "--config.checkpoint_every_steps=2", "--config.eval_every_steps=0"],
  "sft_tiny": ["--config.data.train_size=48", "--config.data.eval_size=48", "--config.total_steps=4",
               "--config.eval_every_steps=4"],
}
_RAISE = re.compile(r"raise (\S+) to at least (\d+)")


def _main(args, env=None):
  return run_main(args, env=env)


def _records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sft_tiny", "grpo_tiny"])
@pytest.mark.parametrize("task", TASKS)
def test_reasoning_gym_task_by_name_runs_through_main(task, config, tmp_path):
  key = "corpus" if config == "sft_tiny" else "task"
  args = [f"--config=configs/{config}.py:smoke", f"--workdir={tmp_path}", f"--config.data.{key}={task}",
          *FAST[config]]
  named = {}
  for _ in range(4):  # each failed try names one length to raise; nothing else may be needed
    out = _main([*args, *(f"--config.{k}={v}" for k, v in named.items())])
    if out.returncode == 0:
      break
    found = _RAISE.findall(out.stderr)
    assert found, out.stderr[-3000:]
    k, v = found[-1]
    k = k.removeprefix("config.")
    assert k not in named and re.fullmatch(r"(data|sft|model\.overrides)\.\w+", k), (k, out.stderr[-2000:])
    named[k] = v
  assert out.returncode == 0, out.stderr[-3000:]
  records = _records(tmp_path)
  assert records and all(r["loss"] == r["loss"] for r in records)  # finite (not NaN)
  if config == "grpo_tiny":
    assert {"reward_correct", "partial_credit", "train_accuracy"} <= set(records[-1])
    assert [e["step"] for e in map(json.loads, (tmp_path / "eval.jsonl").read_text().splitlines())] == [0, 2]
  if task == "countdown":  # ~400-byte prompts: the errors named exactly the prompt and row lengths
    want = {"data.seq_len"} if config == "sft_tiny" else {"data.max_prompt_len", "sft.seq_len"}
    assert set(named) == want
  if task == "spell_backward":
    assert not named  # short prompts fit the defaults


def _readme_example():
  text = (ROOT / "README.md").read_text()
  section = text.split("## Your own task", 1)[1].split("\n## ", 1)[0]
  code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
  command = re.search(r"```bash\n(python -m w2s_jax.main .*?)\n```", section, re.DOTALL).group(1)
  return code, command


@pytest.mark.slow
def test_readme_own_task_example_trains(tmp_path):
  code, command = _readme_example()
  assert len(code.strip().splitlines()) <= 10
  (tmp_path / "my_task.py").write_text(code)
  args = command.split()[3:]
  assert "--config.data.task=my_task:problems" in args
  args = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path / 'run'}" for a in args]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}  # "where you run it"
  out = subprocess.run([sys.executable, "-m", "w2s_jax.main", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  records = _records(tmp_path / "run")
  assert [r["step"] for r in records] == [1, 2, 3]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["data"]["task"] == "my_task:problems"
  sft = _records(tmp_path / "run" / "sft")
  assert sft[-1]["loss"] < sft[0]["loss"]  # it learned the user's task's solutions


# The W2S sweep smoke, shrunk: one loss, few questions and steps; one ladder (pretrained once per run in
# the shared cache; tests/w2s/test_protocol.py's sweep uses the same 4-step ladder).
W2S_FAST = ['--config.losses=("xent",)', "--config.data.train_size=48", "--config.data.eval_size=32",
            "--config.train.total_steps=4", "--config.ladder.total_steps=4"]


@pytest.fixture(scope="module")
def w2s_env(w2s_cache):
  return {"W2S_JAX_CACHE": str(w2s_cache)}


def _w2s_sweep(task, workdir, env, n_test=32):
  out = _main(["--config=configs/w2s_sweep.py:smoke", f"--workdir={workdir}", f"--config.data.task={task}",
               *W2S_FAST, f"--config.data.eval_size={n_test}"], env=env)  # three trainings
  assert out.returncode == 0, out.stderr[-3000:]
  return _check_w2s_results(workdir, task, n_test)


def _check_w2s_results(workdir, task, n_test):
  results = json.loads((workdir / "results.json").read_text())
  assert results["task"] == task and (results["data"]["train"], results["data"]["test"]) == (48, n_test)
  (transfer,) = results["summary"]["transfer"]
  assert (transfer["weak"], transfer["strong"], transfer["loss"]) == ("ladder-0", "ladder-1", "xent")
  assert 0.0 <= transfer["accuracy"]["median"] <= 1.0
  return results


def _words_file(path):
  """A user task file: reverse a made-up word; every fourth record is a held-out (eval) one (25 of 100)."""
  with open(path, "w") as f:
    for i in range(100):
      word = f"{['amber', 'brook', 'cedar', 'delta', 'ember', 'fjord'][i % 6]}{i}"
      f.write(json.dumps({"prompt": f"Spell {word} backwards.", "answer": word[::-1],
                          "steps": [f"{word} backwards is {word[::-1]}"],
                          "split": "eval" if i % 4 == 0 else "train"}) + "\n")
  return path


class TestW2SSweeps:
  """The W2S sweeps: a scope of their own, so `--dist loadscope` may run them beside the runs above."""

  @pytest.mark.slow
  @pytest.mark.parametrize("task", TASKS)
  def test_w2s_sweep_smoke_runs_each_task(self, task, w2s_cache, tmp_path, monkeypatch):
    # W2S_FAST's settings, run in this process: the sweeps reuse its compiled programs instead of a new
    # process re-tracing them (the command line is the user-file test's, below).
    from w2s_jax.w2s.run import run_sweep

    monkeypatch.setenv("W2S_JAX_CACHE", str(w2s_cache))
    config = load_config("w2s_sweep", "smoke")
    with config.unlocked():
      config.losses = ("xent",)
      config.data.task, config.data.train_size, config.data.eval_size = task, 48, 32
      config.train.total_steps = config.ladder.total_steps = 4
    run_sweep(config, tmp_path)
    results = _check_w2s_results(tmp_path, task, 32)
    assert 0.25 <= results["data"]["test_positive_rate"] <= 0.75  # both labels present: a real test set

  @pytest.mark.slow
  def test_user_file_task_runs_rl_and_w2s_sweep_from_the_command_line(self, w2s_env, tmp_path):
    task = str(_words_file(tmp_path / "words.jsonl"))
    out = _main(["--config=configs/grpo_tiny.py:smoke", f"--workdir={tmp_path / 'rl'}",
                 f"--config.data.task={task}", *FAST["grpo_tiny"]])
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r["step"] for r in _records(tmp_path / "rl")] == [1, 2]
    assert json.loads((tmp_path / "rl" / "config.json").read_text())["data"]["task"] == task
    _w2s_sweep(task, tmp_path / "w2s", w2s_env, n_test=24)
