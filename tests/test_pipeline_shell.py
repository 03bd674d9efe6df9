"""The pipeline shell: atomic results.json (no temporary file left, the old file replaced whole), the
printed table, and a metrics.jsonl whose steps count finished trainings."""

import json

from w2s_jax.pipeline_shell import RunLog, finish, memo, write_json


def test_finish_writes_results_atomically_and_returns_the_table(tmp_path):
  (tmp_path / "results.json").write_text('{"old": tru')  # a half-written file of a killed run
  out = finish(tmp_path, {"accuracy": 0.75}, table="| a |")
  assert out == {"table": "| a |", "results": str(tmp_path / "results.json")}
  assert json.loads((tmp_path / "results.json").read_text()) == {"accuracy": 0.75}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left
  assert finish(tmp_path, {"n": 1}) == {"n": 1}


def test_write_json_converts_with_default(tmp_path):
  import numpy as np

  write_json(tmp_path / "sub" / "x.json", {"v": np.float32(0.5)}, default=float)
  assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"v": 0.5}


def test_run_log_steps_count_finished_trainings(tmp_path):
  log = RunLog(tmp_path, "test_loss")
  log({"name": "a", "test_loss": 0.5})
  log({"name": "b", "test_loss": 0.25})
  records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert records == [{"step": 1, "loss": 0.5, "name": "a", "test_loss": 0.5},
                     {"step": 2, "loss": 0.25, "name": "b", "test_loss": 0.25}]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_memo_builds_once_then_reads_the_file(tmp_path):
  calls = []
  build = lambda: calls.append(1) or {"acc": [0.5, 0.25]}
  path = tmp_path / "stages" / "stage1.json"
  assert memo(path, build) == {"acc": [0.5, 0.25]}
  assert memo(path, build) == {"acc": [0.5, 0.25]} and calls == [1]  # the second call reads the file
  assert sorted(p.name for p in path.parent.iterdir()) == ["stage1.json"]
