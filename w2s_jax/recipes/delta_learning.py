"""Delta learning: DPO on (weak, weaker) pairs for a student stronger than both, vs SFT on the weak side.

COMMAND:
  python -m w2s_jax.main --config=configs/delta_learning.py:smoke --workdir=/tmp/delta_smoke
  python -m w2s_jax.main --config=configs/delta_learning.py --workdir=runs/delta_learning

Steps (see configs/delta_learning.py): SFT the weaker, weak and student models on worked solutions (cached
under $W2S_JAX_CACHE/sft); sample one solution per train prompt from weak and weaker; DPO the student on
(weak = chosen, weaker = rejected) pairs with itself as the reference; separately SFT the student on the
weak solutions alone; score every model's greedy solutions to held-out problems with the task's scorer.
Writes WORKDIR/results.json, WORKDIR/pairs.{train,eval}.jsonl, the two student runs (dpo/, sft_chosen/,
resumable) and prints the accuracy table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax.config_files import start_workdir
from w2s_jax.data import pipeline, reasoning
from w2s_jax.data.preference_pairs import read_pairs, write_records
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.transformer import Transformer
from w2s_jax.pipeline_shell import write_json
from w2s_jax.sampling.texts import sample_completions
from w2s_jax.train import pretrain
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import Setup, train
from w2s_jax.train.objectives import OBJECTIVES
from w2s_jax.train.preference_tasks import records_setup, start_params

ORDER = ("weaker", "weak", "student")


def sft_model(c: ml_collections.ConfigDict, m: ml_collections.ConfigDict) -> tuple[Any, nnx.GraphDef, Any]:
  """(model config, graphdef, params) of the `models` entry `m` (preset, total_steps, optimizer) fine-tuned
  on the task's worked solutions."""
  pcfg = pretrain.pretrain_config(
    m.preset, corpus=c.data.task, tokenizer=c.tokenizer, vocab_size=c.vocab_size, seq_len=c.seq_len,
    steps=int(m.total_steps), batch_size=c.sft.batch_size, optimizer=m.optimizer, seed=c.seed,
    mesh={"data": 1},
    corpus_options={"train_size": c.sft.train_size, "eval_size": 64, "seed": c.data.seed,
                    "overlong": "drop"},
  )
  rung = pretrain.pretrain(pcfg, pretrain.cache_root() / "sft")
  return rung.model_cfg, rung.graphdef, jax.device_get(rung.params)


def solve(
  c: ml_collections.ConfigDict, graphdef: nnx.GraphDef, params: Any, problems: list[reasoning.Problem], *,
  temperature: float, seed: int,
) -> list[str]:
  """One solution per problem (greedy when temperature is 0)."""
  prompts = [reasoning_prompt(p) for p in problems]
  out = sample_completions(graphdef, params, ByteTokenizer(), prompts, n=1, max_new_tokens=c.max_new_tokens,
                           temperature=temperature, seed=seed)
  return [texts[0] for texts in out]


def accuracy(
  c: ml_collections.ConfigDict, graphdef: nnx.GraphDef, params: Any, problems: list[reasoning.Problem]
) -> float:
  """Share of held-out problems whose greedy solution the task's scorer marks correct."""
  texts = solve(c, graphdef, params, problems, temperature=0.0, seed=0)
  return float(np.mean([reasoning.score(p, t) >= 1.0 for p, t in zip(problems, texts, strict=True)]))


def delta_pairs(
  problems: list[reasoning.Problem], chosen: list[str], rejected: list[str]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
  """(prompt, weak solution, weaker solution) pairs, identical or empty ones skipped; correct shares."""
  pairs = []
  for p, w, r in zip(problems, chosen, rejected, strict=True):
    if w != r and w.strip() and r.strip():
      pairs.append({"id": p.id, "prompt": reasoning_prompt(p), "chosen": w, "rejected": r,
                    "chosen_score": reasoning.score(p, w), "rejected_score": reasoning.score(p, r)})
  stats = {
    "pairs": len(pairs), "skipped": len(problems) - len(pairs),
    "chosen_correct": float(np.mean([x["chosen_score"] >= 1 for x in pairs])) if pairs else 0.0,
    "rejected_correct": float(np.mean([x["rejected_score"] >= 1 for x in pairs])) if pairs else 0.0,
  }
  return pairs, stats


def _train_config(c: ml_collections.ConfigDict, optimizer: Any) -> ml_collections.ConfigDict:
  config = train_defaults(total_steps=c.total_steps, batch_size=c.batch_size, optimizer=optimizer,
                          seed=c.seed)
  config.mesh.data = 1
  config.eval_every_steps = c.total_steps
  config.checkpoint_every_steps = c.checkpoint_every_steps
  return config


def run_delta_learning(c: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the experiment (the `delta_learning` task of `main`).

  Returns:
    the results (also `WORKDIR/results.json`): held-out accuracy per model, pair statistics, the DPO run's
    held-out reward accuracy at its start and end, and `table` (the accuracy table as Markdown).
  """
  workdir = start_workdir(c, workdir)
  tok = ByteTokenizer()
  train_problems = reasoning_problems(c.data.task, "train", size=c.train_prompts, train_size=c.train_prompts,
                                      seed=c.data.seed + 1)  # prompts other than the SFT data's
  eval_problems = reasoning_problems(c.data.task, "eval", size=c.data.eval_size, train_size=c.sft.train_size,
                                     seed=c.data.seed)
  models = {name: sft_model(c, c.models[name]) for name in ORDER}
  acc = {name: accuracy(c, g, p, eval_problems) for name, (_, g, p) in models.items()}

  records, pair_stats = {}, {}
  for split, problems in (("train", train_problems), ("eval", eval_problems)):
    path = workdir / f"pairs.{split}.jsonl"
    if not path.exists():
      texts = {name: solve(c, models[name][1], models[name][2], problems, temperature=c.sample_temperature,
                           seed=c.seed + (split == "eval")) for name in ("weak", "weaker")}
      pairs, _ = delta_pairs(problems, texts["weak"], texts["weaker"])
      write_records(path, pairs)
    pairs = read_pairs(path)
    records[split] = {"pairs": pairs, "unpaired": []}
    pair_stats[split] = {"pairs": len(pairs),
                         "chosen_correct": float(np.mean([x["chosen_score"] >= 1 for x in pairs])),
                         "rejected_correct": float(np.mean([x["rejected_score"] >= 1 for x in pairs]))}

  cfg, graphdef, params = models["student"]
  dpo_setup = records_setup(
    records, cfg, graphdef, params, tok, objective={"name": "dpo", "beta": c.dpo.beta},
    batch_size=c.batch_size, seq_len=c.seq_len, eval_batches=c.eval_pairs_batches, seed=c.seed,
  )
  dpo = train(_train_config(c, c.dpo.optimizer), workdir / "dpo", dpo_setup)
  acc["student + DPO(weak vs weaker)"] = accuracy(c, graphdef, dpo["state"].params, eval_problems)

  data = pipeline.token_data(
    [(x["prompt"], x["chosen"]) for x in records["train"]["pairs"]],
    [(x["prompt"], x["chosen"]) for x in records["eval"]["pairs"]],
    tok, seq_len=c.seq_len, batch_size=c.batch_size, eval_batches=c.eval_pairs_batches, seed=c.seed,
    overlong="drop",
  )
  make_model = lambda rngs: Transformer(cfg, rngs=rngs)
  sft_setup = Setup(make_model=make_model, objective=OBJECTIVES["sft"](), train_batches=data.train,
                    eval_batches=data.eval_batches, init_params=start_params(make_model, params, c.seed))
  sft = train(_train_config(c, c.sft_on_chosen.optimizer), workdir / "sft_chosen", sft_setup)
  acc["student + SFT(weak only)"] = accuracy(c, graphdef, sft["state"].params, eval_problems)

  results = {
    "task": c.data.task, "eval_problems": len(eval_problems), "accuracy": acc, "pairs": pair_stats,
    "sft_steps": {name: int(c.models[name].total_steps) for name in ORDER},
    "dpo_eval": dpo.get("eval", {}), "dpo_start": dpo_setup.info["metrics"],
  }
  write_json(workdir / "results.json", results, indent=2)
  return {**results, "table": table(results)}


def table(results: dict[str, Any]) -> str:
  """The accuracy table as Markdown."""
  n = results["eval_problems"]
  lines = [f"| model | held-out accuracy ({results['task']}, {n} problems, greedy) |", "|---|---|"]
  for name, a in results["accuracy"].items():
    steps = results["sft_steps"].get(name)
    label = f"{name} (SFT {steps} steps)" if steps is not None else name
    lines.append(f"| {label} | {a:.3f} |")
  p = results["pairs"]["train"]
  lines.append(f"\n{p['pairs']} train pairs; chosen correct {p['chosen_correct']:.3f}, rejected correct "
               f"{p['rejected_correct']:.3f}; held-out DPO reward accuracy "
               f"{results['dpo_start'].get('eval_reward_accuracy_start', float('nan')):.3f} -> "
               f"{results['dpo_eval'].get('eval_reward_accuracy', float('nan')):.3f}")
  return "\n".join(lines)

