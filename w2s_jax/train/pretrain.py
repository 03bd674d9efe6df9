"""Cached pretraining: a preset trained from scratch by the `sft` task, once per config hash.

The from-scratch W2S ladder's rungs (`w2s.rungs`), the preference task's `model.init = "sft"` start and
delta learning's models are such runs. Every one is pretrained once per configuration and kept under the
user's cache directory (`$W2S_JAX_CACHE`, else `$XDG_CACHE_HOME/w2s_jax`, else `~/.cache/w2s_jax`) as an
ordinary run folder (checkpoints, metrics.jsonl), so a sweep pays for it once and an interrupted
pretraining resumes.

Corpora: any of `tasks.CORPORA` (e.g. `pretrain`, the broad mix), or `w2s:<variant>`, a corpus focused on a
verification variant of `w2s_sets.VARIANTS` (`corpus.variant_documents`: `problems` worked problems of the
variant's pretraining pool, disjoint from its W2S questions), written as JSONL into the rung's folder; its
held-out loss is then the loss on that task's own held-out worked solutions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from w2s_jax.data import corpus
from w2s_jax.data.w2s_sets import VARIANTS
from w2s_jax.models.presets import ModelConfig
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import train
from w2s_jax.train.tasks import sft_setup


def cache_root() -> Path:
  if os.environ.get("W2S_JAX_CACHE"):
    return Path(os.environ["W2S_JAX_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "w2s_jax"


@dataclasses.dataclass
class Rung:
  """A pretrained base model.

  Attributes:
    preset: the rung's label in results and run folders (the preset, or a checkpoint's short name).
    model_cfg: the backbone's config.
    graphdef, params: the backbone (`Transformer`), as `nnx.split` returns it.
    eval_loss: held-out next-token loss of its pretraining (NaN for checkpoints loaded from elsewhere).
    workdir: its pretraining run folder, or the checkpoint's path.
    tokenizer: the tokenizer its inputs need; None = the byte tokenizer of the from-scratch ladder.
    source: the name it was asked for in `ladder.sizes` (e.g. `gguf:smollm2-135m`); "" = `preset`.
  """

  preset: str
  model_cfg: ModelConfig
  graphdef: nnx.GraphDef
  params: Any
  eval_loss: float
  workdir: Path
  tokenizer: Any = None
  source: str = ""


def pretrain_config(
  preset: str, *, corpus: str, tokenizer: str, vocab_size: int, seq_len: int, steps: int, batch_size: int,
  seed: int, lr: float | None = None, optimizer: Mapping[str, Any] | None = None,
  mesh: dict[str, int] | None = None, corpus_options: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
  """Config of one rung's pretraining run (the `sft` task on a corpus of `tasks.CORPORA`).

  The optimizer is `optimizer` (a config's `optimizer` section) or, given only `lr`, `train_defaults`'.
  `corpus_options` go into the data section (e.g. `problems_per_task` of the `pretrain` corpus).
  """
  c = train_defaults(total_steps=steps, batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed)
  c.task = "sft"
  c.eval_every_steps = steps
  if mesh:
    c.mesh.update(mesh)
  c.model = ml_collections.ConfigDict({"preset": preset, "vocab_size": vocab_size,
                                       "overrides": {"max_seq_len": max(seq_len, 128)}})
  data = dict(corpus=corpus, tokenizer=tokenizer, seq_len=seq_len, max_chars=1000, eval_frac=0.05,
              eval_batches=8)
  if corpus.startswith("w2s:"):
    if corpus[4:] not in VARIANTS:
      raise ValueError(f"ladder.corpus {corpus!r}: unknown variant; choose w2s:<one of {sorted(VARIANTS)}>")
    data.update(corpus="jsonl", variant=corpus[4:], problems=8000, seed=0)
  c.data = ml_collections.ConfigDict({**data, **(corpus_options or {})})
  c.loss = ml_collections.ConfigDict(dict(name="sft", reduction="token-mean", z_loss=0.0,
                                               label_smoothing=0.0))
  return c


def config_hash(config: ml_collections.ConfigDict) -> str:
  text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _with_variant_files(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
  """Writes a `w2s:<variant>` corpus as JSONL (prompt = question line, response = the rest) once, beside
  the rungs' folders (every rung of a ladder reads the same files), and returns the config reading it
  (`data.train_files`/`eval_files`)."""
  d = config.data
  folder = workdir.parent / "corpora" / f"{d.variant}-{d.problems}-{d.seed}-{d.eval_frac}"
  files = {split: folder / f"{split}.jsonl" for split in ("train", "eval")}
  if not all(f.exists() for f in files.values()):
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"train": [], "eval": []}
    for doc_id, _, text in corpus.variant_documents(d.variant, int(d.problems), int(d.seed)):
      prompt, response = text.split("\n", 1)
      split = "eval" if corpus.in_test_split(doc_id, float(d.eval_frac)) else "train"
      lines[split].append(json.dumps({"id": doc_id, "prompt": prompt + "\n", "response": response}) + "\n")
    for split, f in files.items():
      tmp = f.with_suffix(".tmp")
      tmp.write_text("".join(lines[split]))
      tmp.replace(f)
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.train_files, config.data.eval_files = str(files["train"]), str(files["eval"])
  return config


def pretrain(config: ml_collections.ConfigDict, cache_dir: Path | None = None) -> Rung:
  """Pretrains (or loads from the cache) the rung described by a `pretrain_config`."""
  workdir = (cache_dir or cache_root() / "ladder") / f"{config.model.preset}-{config_hash(config)}"
  if config.data.get("variant"):
    config = _with_variant_files(config, workdir)
  setup = sft_setup(config)
  summary = train(config, workdir, setup)
  report = workdir / "ladder.json"
  if "eval" in summary:
    report.write_text(json.dumps({"preset": config.model.preset, "eval_loss": summary["eval"]["eval_loss"],
                                  "steps": int(config.total_steps)}))
  eval_loss = json.loads(report.read_text())["eval_loss"]
  model = nnx.eval_shape(lambda: setup.make_model(nnx.Rngs(0)))
  graphdef, _ = nnx.split(model)
  return Rung(config.model.preset, model.cfg, graphdef, summary["state"].params, eval_loss, workdir)
