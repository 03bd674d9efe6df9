"""The weak-to-strong sweep as a job: `python -m w2s_jax.main --config=configs/w2s_sweep.py:smoke ...`.

Builds the task's records, pretrains (or loads) the ladder, runs every training of the protocol and
writes `results.json` (raw results per seed and medians with bootstrap CIs), `metrics.jsonl` (one line
per finished training, `loss` being its test cross-entropy), `config.json` and `plots/*.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from w2s_jax.config_files import start_workdir
from w2s_jax.data import w2s_sets
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import count_params
from w2s_jax.pipeline_shell import RunLog, finish
from w2s_jax.train import pretrain
from w2s_jax.w2s import classify, plots, protocol
from w2s_jax.w2s import rungs as rung_lib


def _records(config: ml_collections.ConfigDict) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  d = config.data
  return w2s_sets.generate_splits(d.task, d.train_size, d.eval_size, seed=d.seed,
                                  candidates=_candidates(config), template=d.get("template", ""),
                                  distractors=tuple(d.get("distractors", ())))


def _candidates(config: ml_collections.ConfigDict) -> int:
  return int(config.data.get("candidates", 1))


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the sweep described by `config` in `workdir`; returns the summary."""
  # run names carry the seed, loss and label filter: those may change on a rerun (results reused by name)
  may_change = ("seeds", "losses", "cpu_devices", "mesh", "train.label_filter")
  workdir = start_workdir(config, workdir, may_change=may_change)
  lc = config.ladder
  names = list(lc.sizes)
  rung_lib.check_names(names)  # before any pretraining or loading
  print(f"[data] {config.data.task}: {config.data.train_size} train / {config.data.eval_size} test questions",
        flush=True)
  train_records, test_records = _records(config)
  max_len = config.data.max_len
  encoded: dict[str, tuple[classify.Encoded, classify.Encoded]] = {}

  def encode(key: str, tokenizer: Any) -> tuple[classify.Encoded, classify.Encoded]:
    if key not in encoded:  # once per tokenizer
      encoded[key] = (classify.encode(train_records, tokenizer, max_len),
                      classify.encode(test_records, tokenizer, max_len))
    return encoded[key]

  train, test = encode("bytes", ByteTokenizer())
  rungs, per_rung = [], {}
  for name in names:  # weakest first, as the user lists them
    print(f"[ladder] {name}", flush=True)
    if rung_lib.is_pretrained(name):
      rung = rung_lib.load_pretrained(name, max_len=max_len)
      per_rung[rung.preset] = encode(rung_lib.tokenizer_key(rung), rung.tokenizer)
      rungs.append(rung)
      continue
    pcfg = pretrain.pretrain_config(
      name, corpus=lc.corpus, tokenizer="bytes", vocab_size=lc.vocab_size, seq_len=lc.seq_len,
      steps=lc.total_steps, batch_size=lc.batch_size, lr=lc.lr, seed=lc.seed, mesh=dict(config.mesh),
      corpus_options=lc.corpus_options.to_dict(),
    )
    cache = Path(lc.cache_dir) if lc.cache_dir else None
    rungs.append(pretrain.pretrain(pcfg, cache))
  ladder_report = {r.preset: rung_lib.describe(r) for r in rungs}

  log = RunLog(workdir, "test_loss")  # metrics.jsonl: one record per finished training
  # several candidates per question: the halves are split by question (one candidate keeps the old split)
  groups = [r["question"] for r in train_records] if _candidates(config) > 1 else None
  sweep = protocol.Sweep(rungs, train, test, protocol.sweep_spec(config), workdir, per_rung=per_rung,
                         groups=groups)
  raw = sweep.run(losses=list(config.losses), seeds=list(config.seeds), ensemble=config.ensemble,
                  label_noise=config.label_noise, on_result=log)
  summary = protocol.summarize(raw)
  results = {
    "task": config.data.task, "mode": config.train.mode, "ladder": ladder_report,
    "data": {"train": len(train), "test": len(test), "truncated": train.truncated + test.truncated,
             "truncated_per_tokenizer": {k: tr.truncated + te.truncated for k, (tr, te) in encoded.items()},
             "test_positive_rate": float(test.hard_N.mean())},
    "summary": summary, **raw,
  }
  finish(workdir, results)
  params = {r.preset: count_params(r.model_cfg) for r in rungs}
  depths = {r.preset: r.model_cfg.n_layers for r in rungs}
  plots.plot_sweep(summary, [r.preset for r in rungs], params, workdir / "plots", depths=depths)
  return results
