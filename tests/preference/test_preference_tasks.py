"""The `preference` task end to end: the DPO smoke command learns (held-out reward accuracy rises), every
preference config's smoke builds and trains, the reward-accuracy metric matches a NumPy reference, sampled
completions match a plain greedy decode, and bad configs fail before training."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import load_config, run_main
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.main import TASKS
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.sampling.texts import sample_completions
from w2s_jax.train import preference_tasks as pt
from w2s_jax.train.loop import train

CONFIGS = ["dpo_tiny", "ipo_tiny", "simpo_tiny", "orpo_tiny", "kto_tiny", "reward_model_tiny"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One preference-data cache for the module: the smoke configs share their pairs."""
  path = tmp_path_factory.mktemp("cache")
  old = os.environ.get("W2S_JAX_CACHE")
  os.environ["W2S_JAX_CACHE"] = str(path)
  yield path
  if old is None:
    del os.environ["W2S_JAX_CACHE"]
  else:
    os.environ["W2S_JAX_CACHE"] = old


def _records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dpo_smoke(tmp_path_factory, cache):
  """The DPO smoke command's run (workdir, process result), made once for the module."""
  workdir = tmp_path_factory.mktemp("dpo_smoke") / "dpo"
  proc = run_main(["--config=configs/dpo_tiny.py:smoke", f"--workdir={workdir}"],
                  env={"W2S_JAX_CACHE": str(cache)})
  return workdir, proc


@pytest.mark.slow
def test_dpo_smoke_command_raises_heldout_reward_accuracy(dpo_smoke):
  workdir, proc = dpo_smoke
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = _records(workdir)
  evals = [r for r in records if "eval_reward_accuracy" in r]
  assert [r["step"] for r in evals] == [10, 20, 30, 40]
  start = records[0]
  # Before training the policy is the reference: every margin is 0 (not positive) and the loss is log 2.
  assert start["eval_reward_accuracy_start"] == 0.0
  assert start["eval_loss_start"] == pytest.approx(math.log(2), abs=1e-5)
  assert evals[-1]["eval_reward_accuracy"] > start["eval_reward_accuracy_start"]
  assert evals[-1]["eval_reward_accuracy"] >= 0.6  # measured 0.72 on 64 held-out pairs
  assert evals[-1]["eval_loss"] < math.log(2)
  assert (workdir / "config.json").exists() and any((workdir / "checkpoints").iterdir())
  assert all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.slow
def test_preference_notebook_executes(dpo_smoke, cache, tmp_path, monkeypatch):
  """colab/preference.ipynb top to bottom in a kernel. It trains the DPO smoke config (`dpo_tiny:smoke`) into
  WORKDIR/preference: given a copy of the smoke command's finished run there (the run the test above
  checks), its `train` call resumes at the last step instead of training the same run again; the data
  cell reads the pairs the command cached, the results cells the run's metrics.jsonl."""
  from tests.test_notebooks import check_outputs, run_notebook

  workdir, proc = dpo_smoke
  assert proc.returncode == 0, proc.stderr[-3000:]
  shutil.copytree(workdir, tmp_path / "preference")
  monkeypatch.setenv("W2S_NOTEBOOK_WORKDIR", str(tmp_path))
  monkeypatch.setenv("W2S_JAX_CACHE", str(cache))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  outputs = run_notebook("preference", tmp_path)
  check_outputs(outputs, "held-out reward accuracy")
  last = [r for r in _records(workdir) if "eval_loss" in r][-1]  # the table's last row is the run's
  want = f"| {last['step']} | {last['eval_loss']:.4f} | {last['eval_reward_accuracy']:.3f} |"
  assert want in " ".join(str(o.get("data", {})) for o in outputs)
  assert (tmp_path / "preference" / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_preference_config_has_the_standard_keys(name):
  config = load_config(name, "smoke")
  assert config.task == "preference" and isinstance(config.seed, int)
  assert 0 < config.checkpoint_every_steps <= config.total_steps
  assert load_config(name).total_steps > config.total_steps


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "dpo_tiny"])  # DPO's: the command above
def test_every_preference_config_smoke_builds_and_trains(name, tmp_path, cache):
  config = load_config(name, "smoke")
  # A few steps of the real smoke config; one compile fewer without the start eval; the pairs those steps
  # read (3 batches of 8 pairs, 1 held-out batch) out of fewer problems: the reference's log-probs of
  # every pair are computed before training.
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 3, 3, 3
  config.data.eval_batches = 1
  config.data.train_size, config.data.eval_size = 32, 16
  config.eval_at_start = False
  config.mesh.data = 1
  summary = train(config, tmp_path, TASKS["preference"](config))
  assert summary["final_step"] == 3
  record = _records(tmp_path)[-1]
  assert math.isfinite(record["loss"]) and math.isfinite(record["eval_loss"])
  assert 0.0 <= record["eval_reward_accuracy"] <= 1.0


class Bigram(nnx.Module):
  """A toy language model: next-token logits from the current token alone (cheap to compile)."""

  def __init__(self, vocab, rngs):
    self.table_VV = nnx.Param(jax.random.normal(rngs.params(), (vocab, vocab)))

  def __call__(self, tokens_BL, *, positions_BL=None, segment_ids_BL=None):
    del positions_BL, segment_ids_BL
    return self.table_VV[...][tokens_BL]


def test_kto_reward_accuracy_on_pair_batches_matches_numpy():
  tok = ByteTokenizer()
  prompts = ["q1", "q2", "q3", "q4"]
  chosen, _ = pt.encode_rows(prompts, ["good", "fine", "yes", "ok"], tok, 12)
  rejected, _ = pt.encode_rows(prompts, ["bad", "poor", "no", "nope!"], tok, 12)
  rng = np.random.default_rng(0)
  ref_N2 = rng.normal(-30, 3, (4, 2)).astype(np.float32)
  batch = pt.pair_batch(chosen, rejected, ref_N2, np.arange(4))
  model = Bigram(tok.vocab_size, nnx.Rngs(0))
  _, objective = pt.make_objective({"name": "kto", "beta": 0.1})
  _, weight, sums = objective(model, batch, jax.random.key(0))

  table = np.asarray(model.table_VV[...], np.float64)
  logp = table - np.log(np.exp(table).sum(-1, keepdims=True))
  lp = np.array([sum(logp[i, t] * m for i, t, m in zip(batch["inputs"][r], batch["targets"][r],
                                                         batch["loss_mask"][r], strict=True))
                 for r in range(8)])
  margin = lp - batch["ref_logps"]
  want = np.mean(margin[:4] > margin[4:])
  assert 0 < want < 1  # the case distinguishes right from wrong
  assert float(sums["reward_accuracy"]) / float(weight) == pytest.approx(want)


def test_sample_completions_greedy_matches_plain_decode():
  tok = ByteTokenizer()
  cfg = get_preset("tiny", vocab_size=512, max_seq_len=64)
  model = Transformer(cfg, rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model)
  prompts = ["Question: 1 + 2\n", "Q: 7"]
  out = sample_completions(graphdef, params, tok, prompts, n=2, max_new_tokens=6, temperature=0.0,
                           batch_rows=3)
  # Reference: argmax of the plain no-cache forward over the whole sequence, one token at a time (the
  # sequence right-padded to 32 tokens: causal attention keeps the padding out of earlier positions).
  forward = jax.jit(lambda tokens_1L: model(tokens_1L)[0])
  for prompt, texts in zip(prompts, out, strict=True):
    ids = [tok.bos_id, *tok.encode(prompt)]
    new = []
    for _ in range(6):
      seq = ids + new
      logits_LV = forward(np.asarray([seq + [0] * (32 - len(seq))], np.int32))
      nxt = int(np.argmax(np.asarray(logits_LV)[len(seq) - 1]))
      if nxt == tok.eos_id:
        break
      new.append(nxt)
    want = tok.decode([t for t in new if t != tok.pad_id and t < tok.vocab_size])
    assert texts == [want, want]


@pytest.mark.parametrize("key, value, words", [
  ("loss.name", "dpoo", "unknown preference objective"),
  ("data.source", "scraped", "unknown data.source"),
  ("model.init", "pretrained", "unknown model.init"),
])
def test_bad_config_fails_before_training(key, value, words, tmp_path):
  config = load_config("dpo_tiny", "smoke")
  config.data.cache_dir = str(tmp_path)
  section, field = key.split(".")
  config[section][field] = value
  with pytest.raises(ValueError, match=words):
    TASKS["preference"](config)


def test_config_args():
  with pytest.raises(ValueError, match="unknown config arg"):
    load_config("dpo_tiny", "smok")
  full = load_config("dpo_tiny")
  assert full.data.source == "sampled" and full.model.init == "sft"  # the full run samples and scores
  assert load_config("dpo_tiny", "smoke").data.source == "perturbed"
