"""TFDS builders: build into a temporary data_dir, read back with `tfds.data_source`, no TensorFlow."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

import w2s_jax.data
from tests.helpers import ROOT
from w2s_jax.data import builders, jsonl, reasoning
from w2s_jax.data.builders import JsonlConfig, JsonlDataset, decode_record


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.mark.parametrize("task", sorted(reasoning.TASKS))
def test_reasoning_builder_reads_back_scorable_problems(data_dir, task):
  w2s_jax.data.build("w2s_reasoning", f"{task}_small", data_dir=data_dir)
  train = tfds.data_source(f"w2s_reasoning/{task}_small", data_dir=data_dir, split="train")
  test = tfds.data_source(f"w2s_reasoning/{task}_small", data_dir=data_dir, split="test")
  assert (len(train), len(test)) == (64, 16)
  problems = [reasoning.Problem.from_record(train[i]) for i in range(len(train))]
  assert {p.id for p in problems} == {f"{task}-train-{i}" for i in range(64)}
  assert reasoning.generate(task, "train", 64) == sorted(problems, key=lambda p: int(p.id.rsplit("-", 1)[1]))
  assert not {p.prompt for p in problems} & {decode_record(test[i])["prompt"] for i in range(len(test))}
  assert all(reasoning.score(p, decode_record(train[i])["solution"]) == 1.0 for i, p in enumerate(problems))


@pytest.mark.parametrize("task", ["chain_sum", "gsm_symbolic"])
def test_verify_builder_is_in_w2s_format(data_dir, task):
  builder = builders.build("w2s_verify", f"{task}_small", data_dir=data_dir)
  source = builder.as_data_source()["train"]
  assert len(source) == 64
  r = source[0]
  assert r["soft_label"].dtype == np.float32 and r["soft_label"].shape == (2,)
  np.testing.assert_array_equal(r["soft_label"], [1 - r["hard_label"], r["hard_label"]])
  labels = [int(source[i]["hard_label"]) for i in range(len(source))]
  assert set(labels) == {0, 1}
  assert decode_record(r)["txt"].startswith("Q: ")


def test_pretrain_builder_mixes_sources(data_dir):
  source = builders.build("w2s_pretrain", "tiny", data_dir=data_dir).as_data_source()
  train, test = source["train"], source["test"]
  sources = {decode_record(train[i])["source"] for i in range(len(train))}
  assert {"reasoning/gsm_symbolic", "qa/knights_knaves", "python_reference"} <= sources
  n_reference = len(list(builders.corpus.python_reference_documents()))
  assert len(train) + len(test) == 4 * 20 + 18 * 5 + n_reference


def test_jsonl_builder_round_trips_user_files(data_dir, tmp_path):
  path = tmp_path / "prefs.jsonl"
  rows = [{"id": f"r{i}", "prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(5)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  config = JsonlConfig(name="prefs", shape="preference", files=(("train", (str(path),)),))
  builder = JsonlDataset(config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  source = builder.as_data_source()["train"]
  assert sorted(decode_record(source[i])["id"] for i in range(len(source))) == [f"r{i}" for i in range(5)]
  assert decode_record(source[0])["chosen"] == "good"


def test_jsonl_builder_stops_on_bad_input_before_writing(data_dir):
  bad = ROOT / "tests/data/bad_inputs/missing_field.jsonl"
  config = JsonlConfig(name="bad_sft", shape="sft", files=(("train", (str(bad),)),))
  with pytest.raises(jsonl.BadRecordError, match="missing_field.jsonl:3"):
    JsonlDataset(config=config, data_dir=str(data_dir)).download_and_prepare()
  assert not list((data_dir / "jsonl_dataset").glob("bad_sft/*/dataset_info.json"))
  skipping = JsonlConfig(name="bad_sft_skip", shape="sft", files=(("train", (str(bad),)),),
                         skip_bad_records=True)
  builder = JsonlDataset(config=skipping, data_dir=str(data_dir))
  builder.download_and_prepare()
  assert len(builder.as_data_source()["train"]) == 2 and builder.read_stats.skipped == 1


@pytest.mark.slow
def test_every_registered_default_config_builds_and_reads_without_tensorflow(tmp_path):
  script = textwrap.dedent(f"""
    import json, sys
    import tensorflow_datasets as tfds
    import w2s_jax.data
    out = {{}}
    for name, cls in w2s_jax.data.BUILDERS.items():
      builder = cls(data_dir={str(tmp_path)!r})
      builder.download_and_prepare()
      full = f"{{name}}/{{builder.builder_config.name}}"
      out[full] = {{s: len(tfds.data_source(full, data_dir={str(tmp_path)!r}, split=s))
                   for s in ("train", "test")}}
      tfds.data_source(full, data_dir={str(tmp_path)!r}, split="train[:10]")[3]
    print(json.dumps({{"sizes": out, "tf": "tensorflow" in sys.modules}}))
  """)
  res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert res.returncode == 0, res.stderr[-3000:]
  result = json.loads(res.stdout.strip().splitlines()[-1])
  assert result["tf"] is False
  assert result["sizes"]["w2s_reasoning/gsm_symbolic"] == {"train": 5000, "test": 500}
  assert result["sizes"]["w2s_verify/chain_sum"] == {"train": 4000, "test": 1000}
  assert sum(result["sizes"]["w2s_pretrain/small"].values()) > 15_000
