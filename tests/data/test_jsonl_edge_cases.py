"""Reader edge cases: empty files, byte order marks, lone surrogates, and users' files from the CLI."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_config
from w2s_jax.data import jsonl
from w2s_jax.train.tasks import sft_setup

GOOD = '{"prompt": "What is 2+2?", "response": "4"}\n'


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank_lines"])
@pytest.mark.parametrize("skip", [False, True])
def test_a_file_with_no_records_names_the_file(tmp_path, text, skip):
  # Before: "only 0 packed rows for a batch of 2", no file named.
  path = tmp_path / "train.jsonl"
  path.write_text(text)
  with pytest.raises(jsonl.BadRecordError, match=rf"{path}:1: the file holds no records") as err:
    jsonl.read_records(path, "sft", skip_bad_records=skip)
  assert err.value.kind == "empty_file"


def test_a_file_whose_records_were_all_skipped_is_an_error(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text('{"prompt": "q"}\n{"prompt": "r"}\n')
  with pytest.raises(jsonl.BadRecordError, match="all 2 records were bad"):
    jsonl.read_records(path, "sft", skip_bad_records=True)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
  # Before: line 1 was "malformed JSON".
  path = tmp_path / "bom.jsonl"
  path.write_bytes(b"\xef\xbb\xbf" + (GOOD * 2).encode())
  records, stats = jsonl.read_records(path, "sft")
  assert stats.kept == 2 and records[0]["prompt"] == "What is 2+2?"


@pytest.mark.parametrize("shape,record,field", [
  ("sft", {"prompt": "a\ud800b", "response": "x"}, "prompt"),
  ("preference", {"prompt": "p", "chosen": "c", "rejected": "r\udfff"}, "rejected"),
  ("rl", {"prompt": "p", "answer": "\ud83d"}, "answer"),
])
def test_a_lone_surrogate_names_file_line_and_field(tmp_path, shape, record, field):
  # Before: passed the reader and crashed the tokenizer with no file or line.
  path = tmp_path / "s.jsonl"
  ok = {"sft": GOOD, "preference": '{"prompt": "p", "chosen": "c", "rejected": "d"}\n',
        "rl": '{"prompt": "p", "answer": "1"}\n'}[shape]
  path.write_text(ok + json.dumps(record) + "\n")  # json.dumps escapes the surrogate as \\udXXX
  assert "\\ud" in path.read_text()
  with pytest.raises(jsonl.BadRecordError, match=rf"s.jsonl:2: field '{field}': lone surrogate"):
    jsonl.read_records(path, shape)
  records, stats = jsonl.read_records(path, shape, skip_bad_records=True)
  assert (stats.kept, dict(stats.by_kind)) == (1, {"utf8": 1})
  # a proper pair (an escaped emoji) is text
  path.write_text(json.dumps({**record, field: "ok \U0001f600"}) + "\n")
  assert jsonl.read_records(path, shape)[1].kept == 1


def test_sft_tiny_reads_users_files_from_the_command_line_keys(tmp_path):
  # Before: --config.data.train_files was an unknown key of sft_tiny.
  train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
  train.write_text(GOOD * 20 + '{"prompt": "no response"}\n')
  evals.write_text(GOOD * 4)
  c = load_config("sft_tiny", "smoke")
  c.data.corpus, c.data.train_files, c.data.eval_files = "jsonl", f"{train}", f"{evals}"
  c.data.seq_len, c.batch_size = 64, 2
  with pytest.raises(jsonl.BadRecordError, match="train.jsonl:21: field 'response'"):
    sft_setup(c)
  c.data.skip_bad_records = True
  setup = sft_setup(c)
  info = setup.info["corpus"]["train"]
  assert (info["records"], info["bad_records"]) == (20, 1)
  assert setup.train_batches[0]["inputs"].shape == (2, 64)


def test_preference_configs_read_users_pair_files_with_skip_mode(tmp_path):
  # Before: the preference error suggested skip_bad_records, which preference configs lacked.
  from w2s_jax.train.preference_tasks import preference_records

  pair = '{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}\n'
  train, evals = tmp_path / "pairs.jsonl", tmp_path / "eval.jsonl"
  train.write_text(pair * 3 + '{"prompt": "2+2=", "chosen": " 4", "rejected": " 4"}\n')
  evals.write_text(pair)
  c = load_config("dpo_tiny", "smoke")
  c.data.source, c.data.train_files, c.data.eval_files = "files", str(train), str(evals)
  with pytest.raises(jsonl.BadRecordError, match="pairs.jsonl:4: field 'rejected': identical"):
    preference_records(c, None, None, None)
  c.data.skip_bad_records = True
  records, stats, _ = preference_records(c, None, None, None)
  assert len(records["train"]["pairs"]) == 3 and stats["train"]["bad_by_kind"] == {"identical": 1}
  assert sorted(u["label"] for u in records["train"]["unpaired"]) == [False, True]  # distinct completions
