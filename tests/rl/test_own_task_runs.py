"""Tasks the library never picked, through `python -m w2s_jax.main`: reasoning-gym tasks by name through the
SFT and RL smokes (with only the length overrides the errors name), and the README's own-task example."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

TASKS = ["countdown", "leg_counting", "spell_backward", "word_sorting", "family_relationships"]
# Fewer problems and steps than the smoke args, only so the ten runs stay a few minutes on 2 cores.
FAST = {
  "grpo_tiny": ["--config.data.train_size=48", "--config.sft.total_steps=6", "--config.total_steps=2",
                "--config.checkpoint_every_steps=2", "--config.eval.every_steps=0"],
  "sft_tiny": ["--config.data.train_size=48", "--config.data.eval_size=48", "--config.total_steps=4",
               "--config.eval_every_steps=4"],
}
_RAISE = re.compile(r"raise (\S+) to at least (\d+)")


def _main(args, env=None, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "w2s_jax.main", *args], cwd=cwd, capture_output=True,
                        text=True, timeout=600, env=env)


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
  out = _main(args, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  records = _records(tmp_path / "run")
  assert [r["step"] for r in records] == [1, 2, 3]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["data"]["task"] == "my_task:problems"
  sft = _records(tmp_path / "run" / "sft")
  assert sft[-1]["loss"] < sft[0]["loss"]  # it learned the user's task's solutions
