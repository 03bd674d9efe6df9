"""Pretrained checkpoints as rungs of the weak-to-strong sweep (`hf:` / `gguf:` names, own tokenizers)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import load_config
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.w2s import classify, protocol, rungs
from w2s_jax.w2s.run import run_sweep


def _tiny_llama_folder(path):
  """A tiny random transformers Llama with a trained byte-level BPE tokenizer, saved to `path`."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from tests.models.test_convert import _hf_model, _train_tokenizer  # noqa: PLC0415 (needs torch)

  tok = _train_tokenizer()
  _hf_model("llama", vocab_size=tok.get_vocab_size()).save_pretrained(path)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(
    {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
  ))
  return path


def _config(sizes, tmp_path):
  config = load_config("w2s_sweep", "smoke")
  with config.unlocked():
    config.ladder.sizes = sizes
    config.ladder.total_steps = 4
    config.ladder.cache_dir = str(tmp_path / "cache")
    config.train.mode = "probe"
    config.train.probe_steps = 50
    config.losses = ["xent"]
    config.data.train_size = 32
    config.data.eval_size = 16
    config.data.max_len = 48
  return config


@pytest.mark.parametrize("name, match", [
  ("hf:/nonexistent/folder", "not a checkpoint folder with a config.json"),
  ("gguf:nope", "no such GGUF file; use gguf:smollm2-135m"),
  ("ladder-99", "unknown rung 'ladder-99': use a ladder preset"),
])
def test_bad_rung_name_stops_the_sweep_before_any_training(tmp_path, name, match):
  with pytest.raises(ValueError, match=match):
    run_sweep(_config(["ladder-0", name], tmp_path), tmp_path / "run")
  assert not (tmp_path / "cache").exists()  # the good rung was not pretrained first


def test_rung_labels_and_duplicates(tmp_path):
  assert rungs.rung_label("gguf:smollm2-135m") == "smollm2-135m"
  assert rungs.rung_label("hf:/a/b/my-model/") == "my-model"
  assert rungs.rung_label("gguf:/x/m.Q4_1.gguf") == "m.Q4_1"
  (tmp_path / "ladder-0").mkdir()
  (tmp_path / "ladder-0" / "config.json").write_text("{}")
  with pytest.raises(ValueError, match="no tokenizer.json"):
    rungs.check_names([f"hf:{tmp_path / 'ladder-0'}"])
  (tmp_path / "ladder-0" / "tokenizer.json").write_text("{}")
  with pytest.raises(ValueError, match="share the label 'ladder-0'"):
    rungs.check_names(["ladder-0", f"hf:{tmp_path / 'ladder-0'}"])


def test_sweep_rejects_per_rung_sets_of_other_records(tmp_path):
  tok = ByteTokenizer()
  recs = [{"txt": f"{i} + 1", "hard_label": i % 2} for i in range(8)]
  enc = classify.encode(recs, tok, 8)
  other = classify.encode([dict(r, hard_label=1 - r["hard_label"]) for r in recs], tok, 8)
  with pytest.raises(ValueError, match="rung 'x': its encoded sets do not hold the same records"):
    protocol.Sweep([], enc, enc, protocol.TrainSpec(mode="probe"), tmp_path, per_rung={"x": (other, enc)})


@pytest.mark.slow
def test_hf_rung_runs_a_probe_sweep_with_its_own_tokenizer(tmp_path, monkeypatch, w2s_cache):
  folder = _tiny_llama_folder(tmp_path / "tiny-llama")
  seen = {}
  original = protocol.Sweep.features

  def spy(self, rung, data):
    seen.setdefault(rung.preset, data.tokens_NL)
    return original(self, rung, data)

  monkeypatch.setattr(protocol.Sweep, "features", spy)
  config = _config(["ladder-0", f"hf:{folder}"], tmp_path)
  with config.unlocked():  # the 4-step ladder-0 of the other sweep tests, pretrained once per run
    config.ladder.cache_dir = str(w2s_cache / "ladder")
  results = run_sweep(config, tmp_path / "run")

  assert list(results["ladder"]) == ["ladder-0", "tiny-llama"]  # the user's order, weak first
  assert results["ladder"]["tiny-llama"]["tokenizer"] == f"hf:{folder}"
  assert set(results["data"]["truncated_per_tokenizer"]) == {"bytes", f"hf:{folder}"}
  (seed,) = results["per_seed"]
  assert set(seed["ground_truth"]) == {"ladder-0", "tiny-llama"}
  (t,) = seed["transfer"]
  assert (t["weak"], t["strong"], t["loss"]) == ("ladder-0", "tiny-llama", "xent")
  assert 0.0 <= t["accuracy"] <= 1.0 and 0.0 <= t["weak_label_acc"] <= 1.0

  # The checkpoint read its own tokens (BPE ids after its BOS), the ladder rung bytes.
  from w2s_jax.models.convert import load_hf

  tokenizer = load_hf(folder).tokenizer
  hf_row, byte_row = seen["tiny-llama"][0], seen["ladder-0"][0]
  assert hf_row[0] == tokenizer.bos_id and byte_row[0] == ByteTokenizer().bos_id
  n_hf, n_bytes = int(np.sum(hf_row != tokenizer.pad_id)), int(np.sum(byte_row != ByteTokenizer().pad_id))
  assert not np.array_equal(hf_row[1:n_hf], byte_row[1:n_hf])
  text = tokenizer.decode(hf_row[1:n_hf].tolist())  # the same record's tail, in the checkpoint's ids
  assert len(text) > 20 and text.endswith(ByteTokenizer().decode(byte_row[1:n_bytes].tolist())[-20:])
  assert (tmp_path / "run" / "runs" / "seed0" / "gt-tiny-llama" / "result.json").exists()
  assert (tmp_path / "run" / "plots" / "w2s_xent.png").stat().st_size > 1000


@pytest.mark.slow
def test_lora_mode_trains_only_adapters_and_head():
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train.pretrain import Rung
  from w2s_jax.w2s import lora_mode

  tok = ByteTokenizer()
  cfg = get_preset("ladder-0", vocab_size=tok.vocab_size)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  before = [np.array(x) for x in jax.tree.leaves(params)]
  rung = Rung("r", cfg, graphdef, params, float("nan"), Path("."))
  rng = np.random.default_rng(0)
  recs = [{"txt": f"{rng.integers(100)} is {'odd' if i % 2 else 'even'}", "hard_label": i % 2}
          for i in range(32)]
  enc = classify.encode(recs, tok, 16)
  probs, extra = lora_mode.lora_finetune(rung, enc, [enc], "xent", steps=40, batch_size=16, lr=3e-2, seed=0,
                                         targets=("q", "v"), rank=2)
  d, r = cfg.d_model, 2
  per_layer = (d * r + r * cfg.n_heads * cfg.head_dim) + (d * r + r * cfg.n_kv_heads * cfg.head_dim)
  assert extra["trainable_params"] == cfg.n_layers * per_layer + d * 2  # adapters on q, v + the head
  assert np.mean(np.argmax(probs[0], 1) == enc.hard_N) > 0.9  # the label is in the last tokens
  for old, cur in zip(before, jax.tree.leaves(rung.params)):
    np.testing.assert_array_equal(old, cur)  # the rung's backbone is untouched (and not donated away)
