"""Bad input in users' files: one clear error per case (file, line, field), or a counted skip."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_config
from w2s_jax.data import jsonl
from w2s_jax.train.tasks import sft_setup

BAD = Path(__file__).parent / "bad_inputs"

# file, shape, bad line, field, kind, good records kept when skipping, extra read options
CASES = [
  ("malformed_json.jsonl", "sft", 2, None, "json", 2, {}),
  ("not_object.jsonl", "sft", 2, None, "json", 1, {}),
  ("missing_field.jsonl", "sft", 3, "response", "missing", 2, {}),
  ("wrong_type.jsonl", "sft", 1, "response", "type", 1, {}),
  ("empty_text.jsonl", "sft", 2, "prompt", "empty", 1, {}),
  ("non_utf8.jsonl", "sft", 2, None, "utf8", 2, {}),
  ("over_length.jsonl", "sft", 2, "prompt", "too_long", 1, {"max_chars": 40}),
  ("duplicate_id.jsonl", "sft", 3, "id", "duplicate_id", 2, {}),
  ("label_out_of_range.jsonl", "w2s", 2, "hard_label", "label", 1, {}),
  ("soft_label_not_probability.jsonl", "w2s", 2, "soft_label", "label", 1, {}),
  ("bool_label.jsonl", "w2s", 2, "hard_label", "type", 1, {}),
  ("preference_wrong_type.jsonl", "preference", 3, "rejected", "type", 1, {}),  # line 2 is blank
  ("rl_null_answer.jsonl", "rl", 2, "answer", "type", 1, {}),
]


@pytest.mark.parametrize("name,shape,line,field,kind,kept,opts", CASES, ids=[c[0] for c in CASES])
def test_bad_record_raises_naming_file_line_field(name, shape, line, field, kind, kept, opts):
  with pytest.raises(jsonl.BadRecordError) as err:
    jsonl.read_records(BAD / name, shape, **opts)
  e = err.value
  assert (Path(e.path).name, e.line, e.field, e.kind) == (name, line, field, kind)
  msg = str(e)
  assert f"{name}:{line}" in msg and "skip_bad_records" in msg
  if field:
    assert repr(field) in msg


@pytest.mark.parametrize("name,shape,line,field,kind,kept,opts", CASES, ids=[c[0] for c in CASES])
def test_bad_record_skipped_and_counted(name, shape, line, field, kind, kept, opts):
  records, stats = jsonl.read_records(BAD / name, shape, skip_bad_records=True, **opts)
  assert (stats.kept, stats.skipped, dict(stats.by_kind)) == (kept, 1, {kind: 1})
  assert len(records) == kept


def test_good_w2s_records_get_one_hot_soft_labels(tmp_path):
  path = tmp_path / "sciq.jsonl"
  rows = [{"txt": "Q: What gas do plants absorb? A: carbon dioxide", "hard_label": 1},
          {"txt": "Q: What gas do plants absorb? A: helium", "hard_label": 0, "soft_label": [0.75, 0.25]}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  records, stats = jsonl.read_records(path, "w2s")
  assert [r["soft_label"] for r in records] == [[0.0, 1.0], [0.75, 0.25]]
  assert (stats.kept, stats.skipped) == (2, 0)


def test_parquet_rows_are_checked_too(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  path = tmp_path / "rl.parquet"
  pq.write_table(pa.table({"prompt": ["2+2?", "3+3?"], "answer": ["4", ""]}), path)
  with pytest.raises(jsonl.BadRecordError, match=r"rl.parquet:2: field 'answer': empty text"):
    jsonl.read_records(path, "rl")
  assert jsonl.read_records(path, "rl", skip_bad_records=True)[1].skipped == 1


def test_duplicate_ids_across_files_are_caught(tmp_path):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text('{"id": 7, "prompt": "p", "answer": "1"}\n')
  b.write_text('{"id": 8, "prompt": "q", "answer": "2"}\n{"id": 7, "prompt": "r", "answer": "3"}\n')
  seen = {}
  jsonl.read_records(a, "rl", seen_ids=seen)
  expected = r"b.jsonl:2: field 'id': duplicate id 7 \(first at .*a.jsonl:1\)"
  with pytest.raises(jsonl.BadRecordError, match=expected):
    jsonl.read_records(b, "rl", seen_ids=seen)


def _jsonl_config(train_file, skip):
  c = load_config("sft_tiny", "smoke")
  with c.unlocked():
    c.data.corpus = "jsonl"
    c.data.train_files = str(train_file)
    c.data.eval_files = str(BAD / "over_length.jsonl")
    c.data.skip_bad_records = skip
    c.data.seq_len = 64
    c.batch_size = 1
  return c


def test_training_setup_stops_before_training_on_a_bad_file():
  with pytest.raises(jsonl.BadRecordError, match="missing_field.jsonl:3: field 'response'"):
    sft_setup(_jsonl_config(BAD / "missing_field.jsonl", skip=False))


def test_training_setup_skips_and_reports_the_count():
  setup = sft_setup(_jsonl_config(BAD / "missing_field.jsonl", skip=True))
  info = setup.info["corpus"]["train"]
  assert (info["records"], info["bad_records"], info["bad_by_kind"]) == (2, 1, {"missing": 1})
  batch = setup.train_batches[0]
  assert batch["inputs"].shape == (1, 64) and batch["loss_mask"].sum() > 0


def test_skipped_count_reaches_metrics_jsonl(tmp_path):
  import json

  from w2s_jax.train.loop import train

  c = _jsonl_config(BAD / "missing_field.jsonl", skip=True)
  with c.unlocked():
    c.total_steps = 2
    c.eval_every_steps = 0
    c.mesh.data = 1
  train(c, tmp_path, sft_setup(c))
  records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  assert all(r["bad_records_skipped"] == 1 for r in records)
