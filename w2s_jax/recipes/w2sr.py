"""W2SR: SFT of a strong student on a weak reasoner's worked solutions, against RL from the same start.

"Incentivizing Strong Reasoning from Weak Supervision" (Yuan et al. 2025, arXiv 2505.20072): a strong
student fine-tuned on chain-of-thought samples of a much weaker reasoner recovers most of the gain of
expensive RL. Here (task "w2sr"):

1. the weak reasoner (`weak`: a small preset + an SFT budget on gold worked solutions, `rl.sft_init`)
   samples `w2sr.samples_per_problem` solutions of each of `w2sr.problems` train problems (correct and
   incorrect kept; `w2sr.correct_only` keeps only those the task's scorer accepts);
2. the strong student (the config's `model`, given the short SFT start of its `sft` section, in
   `strong_start/` or `sft.workdir`) is SFT'd on them through the SFT loop (`w2sr.sft`, corpus `jsonl`,
   eval loss on held-out gold solutions), in `w2sr_sft/`;
3. RL (`rl.loop.train_rl`, the config's rollout/advantage/loss sections: GRPO by default) runs from the
   same start on the same problems: `w2sr.problems / rollout.prompts_per_step` iterations over exactly
   the prompt stream whose first `w2sr.problems` prompts step 1 sampled, in `rl/`;
4. held-out pass@k of weak, start, W2SR and RL, all with one sampler setting and key (`rl.evaluate`),
   and the share of RL's pass@1 gain that W2SR recovers, (sft − start) / (rl − start)
   (`recovered_share`), go to `results.json`.

Rerunning resumes every phase (the weak samples are cached in `weak_solutions.jsonl`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.config_files import start_workdir
from w2s_jax.data.reasoning import Problem
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.models.presets import from_section
from w2s_jax.pipeline_shell import finish
from w2s_jax.rl.evaluate import evaluate, sample_eval
from w2s_jax.rl.loop import prompt_indices, train_rl
from w2s_jax.rl.roles import abstract_graphdef, prepare_role
from w2s_jax.rl.rollout import PromptSet, encode_prompts
from w2s_jax.rl.sft_init import run_sft, sft_config
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train.loop import train
from w2s_jax.train.tasks import make_tokenizer, sft_setup


def recovered_share(start_acc: float, sft_acc: float, rl_acc: float) -> tuple[float | None, str | None]:
  """Share of RL's gain recovered by weak-solution SFT: (sft − start) / (rl − start).

  1 means W2SR matched RL, 0 that it did no better than the start, < 0 that it hurt. Undefined when RL
  did not improve on the start (rl ≤ start): then (None, the reason), never a silent division by zero.

  Returns:
    (share, None) or (None, reason).
  """
  gain = rl_acc - start_acc
  if gain <= 0:
    return None, (f"RL did not improve on the start (rl_acc − start = {rl_acc:.4f} − {start_acc:.4f} = "
                  f"{gain:+.4f}); the recovered share is undefined")
  return (sft_acc - start_acc) / gain, None


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key."""
  w, B = config.w2sr, int(config.rollout.prompts_per_step)
  if w.problems <= 0 or w.problems % B:
    raise ValueError(f"w2sr.problems={w.problems} must be a positive multiple of "
                     f"rollout.prompts_per_step={B} (RL sees the same problems, B per iteration)")
  if w.samples_per_problem < 1:
    raise ValueError(f"w2sr.samples_per_problem must be >= 1, got {w.samples_per_problem}")
  if w.temperature <= 0:
    raise ValueError(f"w2sr.temperature must be > 0 (the weak reasoner samples), got {w.temperature}")
  if config.dynamic_sampling.enabled:
    raise ValueError("dynamic_sampling.enabled must be False: RL must see exactly the W2SR problems")
  if config.weak.model.vocab_size != config.model.vocab_size:
    raise ValueError("weak.model.vocab_size and model.vocab_size must be equal (one tokenizer)")


def _rl_config(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
  """The RL arm's config: same start (`sft.workdir`), `problems / B` iterations, no in-loop evaluation."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.task = "rl"
  c.sft.workdir = config.sft.workdir or str(workdir / "strong_start")
  c.total_steps = int(config.w2sr.problems) // int(config.rollout.prompts_per_step)
  c.checkpoint_every_steps = min(int(config.checkpoint_every_steps), c.total_steps)
  c.eval.samples = 0  # evaluated below with the other models, same sampler and key
  return c


def solution_records(
  problems: Sequence[Problem], texts: Sequence[str], correct_R: np.ndarray, k: int, correct_only: bool
) -> tuple[list[str], int]:
  """JSONL lines (`sft` records + `correct`) of k samples per problem (row r: sample r % k of problem r // k).

  Empty completions are dropped and counted; with `correct_only`, so are those the scorer rejected.

  Returns:
    (lines, number of empty completions).
  """
  lines, empty = [], 0
  for r, text in enumerate(texts):
    problem, correct = problems[r // k], bool(correct_R[r] >= 1.0)
    if not text.strip():
      empty += 1
      continue
    if correct_only and not correct:
      continue
    lines.append(json.dumps({"id": f"{problem.id}-{r % k}", "prompt": reasoning_prompt(problem),
                             "response": text, "correct": correct}))
  return lines, empty


def weak_solutions(
  config: ml_collections.ConfigDict, weak_params: Any, weak_graphdef: nnx.GraphDef, prompts: PromptSet,
  tokenizer: Tokenizer, mesh: Any, rules: Any, path: Path,
) -> dict[str, Any]:
  """Samples (or reloads) the weak reasoner's solutions; writes them as `sft` JSONL records.

  Returns:
    stats: `samples`, `kept` (records written), `weak_train_accuracy`, `empty` (empty completions, dropped).
  """
  stats_path = path.with_suffix(".stats.json")
  if path.exists() and stats_path.exists():
    return json.loads(stats_path.read_text())
  w = config.w2sr
  k = int(w.samples_per_problem)
  sampler = Sampler(weak_graphdef, SamplingConfig(
    max_new_tokens=int(config.rollout.max_new_tokens), temperature=float(w.temperature),
    stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id), mesh=mesh, rules=rules)
  key = jax.random.fold_in(jax.random.key(config.seed), 2_000_003)
  chunk = max(int(config.rollout.prompts_per_step) * int(config.rollout.group_size) // k, 1)
  rollout = sample_eval(sampler, weak_params, prompts, k, key, tokenizer, chunk)
  lines, empty = solution_records(rollout.problems, rollout.texts, rollout.correct_R, k, bool(w.correct_only))
  if not lines:
    raise ValueError(f"the weak reasoner produced no usable solution (w2sr.correct_only={w.correct_only}, "
                     f"{len(rollout.texts)} samples); give it more SFT (weak.sft.total_steps)")
  tmp = path.with_suffix(".tmp")
  tmp.write_text("\n".join(lines) + "\n")
  tmp.replace(path)
  stats = {"samples": len(rollout.texts), "kept": len(lines), "empty": empty,
           "weak_train_accuracy": float(rollout.correct_R.mean())}
  stats_path.write_text(json.dumps(stats, indent=2))
  return stats


def _w2sr_sft(config: ml_collections.ConfigDict, rl_cfg: ml_collections.ConfigDict, start_params: Any,
              train_file: Path, eval_file: Path, workdir: Path) -> dict[str, Any]:
  """SFT of the strong start on the weak solutions (the SFT loop with `init_params` = the start)."""
  s = config.w2sr.sft
  c = sft_config(rl_cfg)
  c.total_steps, c.batch_size = int(s.total_steps), int(s.batch_size)
  c.optimizer = ml_collections.ConfigDict(s.optimizer.to_dict())
  c.eval_every_steps = c.checkpoint_every_steps = int(s.total_steps)
  c.data.corpus = "jsonl"
  c.data.train_files, c.data.eval_files = str(train_file), str(eval_file)
  setup = dataclasses.replace(sft_setup(c), init_params=lambda: start_params)
  return train(c, workdir, setup)


def run_w2sr(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the W2SR comparison; see the module docstring.

  Returns:
    summary (also `results.json`): the four evaluations, `recovered_share` (+ `share_reason` when
    undefined), the weak-sample statistics and wall time.
  """
  validate(config)
  workdir = start_workdir(config, workdir)
  t0 = time.perf_counter()
  tokenizer = make_tokenizer(config.data.tokenizer)
  rl_cfg = _rl_config(config, workdir)
  weak_cfg, weak_params, weak_sft = prepare_role(config, "weak", workdir)
  start_params, start_sft = run_sft(rl_cfg, workdir / "rl")

  d, ro = config.data, config.rollout
  train_prompts = encode_prompts(reasoning_problems(d.task, "train", size=d.train_size, seed=d.seed),
                                 tokenizer, d.max_prompt_len)
  eval_problems = reasoning_problems(d.task, "eval", size=d.eval_size, train_size=d.train_size,
                                     seed=d.seed)
  eval_prompts = encode_prompts(eval_problems, tokenizer, d.max_prompt_len)
  # The problems RL's first problems/B iterations draw (rl.loop.prompt_indices from cursor 0).
  idx = prompt_indices(0, int(config.w2sr.problems), len(train_prompts.problems), int(config.seed))
  mesh, rules = shd.make_mesh(dict(config.mesh)), shd.get_rules(config.sharding)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    weak_graphdef = abstract_graphdef(weak_cfg)
    strong_graphdef = abstract_graphdef(from_section(config.model))
    stats = weak_solutions(config, weak_params, weak_graphdef, train_prompts.take(idx), tokenizer, mesh,
                           rules, workdir / "weak_solutions.jsonl")
  eval_file = workdir / "heldout_gold.jsonl"
  eval_file.write_text("".join(json.dumps({"prompt": reasoning_prompt(p), "response": p.solution}) + "\n"
                               for p in eval_problems))
  w2sr_params = _w2sr_sft(config, rl_cfg, start_params, workdir / "weak_solutions.jsonl", eval_file,
                          workdir / "w2sr_sft")["state"].params
  rl_params = train_rl(rl_cfg, workdir / "rl")["state"].params

  ev = config.eval
  key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
  chunk = max(int(ro.prompts_per_step) * int(ro.group_size) // int(ev.samples), 1)
  sampling = SamplingConfig(max_new_tokens=int(ro.max_new_tokens), temperature=float(ro.temperature),
                            stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    weak = Sampler(weak_graphdef, sampling, mesh=mesh, rules=rules)
    strong = Sampler(strong_graphdef, sampling, mesh=mesh, rules=rules)
    run = lambda sampler, params: evaluate(sampler, params, eval_prompts, int(ev.samples), list(ev.ks), key,
                                           tokenizer, chunk)
    evals = {"weak": run(weak, weak_params), "start": run(strong, start_params),
             "w2sr": run(strong, w2sr_params), "rl": run(strong, rl_params)}
  share, reason = recovered_share(evals["start"]["pass@1"], evals["w2sr"]["pass@1"], evals["rl"]["pass@1"])
  summary = {
    "pass@1": {name: e["pass@1"] for name, e in evals.items()}, "recovered_share": share,
    "share_reason": reason, "weak_solutions": stats, "problems": int(config.w2sr.problems),
    "evals": evals, "weak_sft": weak_sft, "start_sft": start_sft, "wall_s": time.perf_counter() - t0,
  }
  finish(workdir, summary, default=str)
  return summary
