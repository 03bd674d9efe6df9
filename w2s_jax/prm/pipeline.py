"""The `prm_pipeline` task: SFT a policy, label its solutions' steps by Monte Carlo, train a PRM, rerank.

COMMAND: python -m w2s_jax.main --config=configs/prm_tiny.py:smoke --workdir=/tmp/prm_tiny

Phases, each resumed or reloaded when the workdir already holds it:
1. SFT of the tiny policy on worked solutions (`rl.sft_init.run_sft`, in WORKDIR/sft or `sft.workdir`).
2. Labels: `label.solutions_per_problem` solutions for each of `label.problems` train problems, split into
   steps at `label.boundary`, labelled by `label.method` (`mc_hard` / `mc_soft`: Math-Shepherd with K =
   `label.rollouts_per_step` completions from every step prefix; `omega`: OmegaPRM's binary search for
   the first error). Written to WORKDIR/labels.jsonl with every sampled completion and its score.
3. PRM training: a `ValueModel` whose backbone starts from the SFT policy, the `prm` objective (BCE at
   step ends) through `train.loop.train` in WORKDIR/prm; a `label.eval_frac` share of the labelled
   problems is held out for its eval loss and step accuracy.
4. Evaluation on held-out problems: `eval.samples` solutions each; the answer picked by PRM best-of-N
   (each solution reduction), PRM-weighted vote, plain majority vote and a random pick (pass@1), with
   bootstrap CIs over problems. WORKDIR/results.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.advantages.process import SOLUTION_REDUCTIONS, prm_best_of_n, prm_solution_scores
from w2s_jax.config_files import start_workdir
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.evals.metrics import auroc, bootstrap_ci
from w2s_jax.models.heads import ValueModel
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.pipeline_shell import finish
from w2s_jax.prm.data import CyclingBatches, fixed_batches, prm_rows, step_scores
from w2s_jax.prm.labels import METHODS, label_solutions, step_end_indices
from w2s_jax.prm.mc import Solutions, prefix_completions, solutions_from_rollout
from w2s_jax.rl.evaluate import pass_maj_metrics, sample_eval
from w2s_jax.rl.rollout import PromptSet, encode_prompts
from w2s_jax.rl.sft_init import run_sft
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import Setup, train
from w2s_jax.train.objectives import prm_objective
from w2s_jax.train.preference_tasks import start_params
from w2s_jax.train.tasks import make_tokenizer

LABEL_KEYS = ("method", "problems", "solutions_per_problem", "rollouts_per_step", "boundary")


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key, on settings the pipeline cannot run."""
  lab = config.label
  if lab.method not in METHODS:
    raise ValueError(f"label.method must be one of {METHODS}, got {lab.method!r}")
  for key in ("problems", "solutions_per_problem", "rollouts_per_step", "chunk_rows"):
    if int(lab[key]) < 1:
      raise ValueError(f"label.{key} must be >= 1, got {lab[key]}")
  if not 0.0 <= float(lab.eval_frac) < 1.0:
    raise ValueError(f"label.eval_frac must be in [0, 1), got {lab.eval_frac}")
  if int(lab.problems) > int(config.data.train_size):
    raise ValueError(f"label.problems={lab.problems} > data.train_size={config.data.train_size}")
  if int(config.eval.samples) < 1 or int(config.eval.chunk_rows) < 1:
    raise ValueError("eval.samples and eval.chunk_rows must be >= 1")
  if float(config.rollout.temperature) <= 0:
    raise ValueError("rollout.temperature must be > 0 (Monte Carlo labels need sampling)")


def _boundary_ids(tokenizer: Any, boundary: str) -> tuple[int, ...]:
  ids = tuple(tokenizer.encode(boundary))
  if len(ids) != 1:
    raise ValueError(f"label.boundary {boundary!r} must be one token of the tokenizer, got ids {ids}")
  return ids


def widen(prompts: PromptSet, extra: int, pad_id: int) -> PromptSet:
  """The prompts left-padded by `extra` more slots: solutions, Monte Carlo completions (prompt + a prefix
  of up to N tokens) and evaluation then share one sampler shape, P + N prompt slots."""
  tokens = np.pad(prompts.tokens_BP, ((0, 0), (extra, 0)), constant_values=pad_id)
  mask = np.pad(prompts.mask_BP, ((0, 0), (extra, 0)), constant_values=False)
  return PromptSet(prompts.problems, tokens, mask, dropped=prompts.dropped)


def _label_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  keys = {k: config.label[k] for k in LABEL_KEYS}
  return {"label": keys, "seed": int(config.seed), "data": config.data.to_dict(),
          "rollout": config.rollout.to_dict(), "sft": config.sft.to_dict(), "model": config.model.to_dict()}


def save_labels(path: Path, solutions: Solutions, problem_index: list[int], records: list[dict[str, Any]],
                texts: dict[tuple[int, int], list[str]]) -> None:
  """One JSON line per solution: tokens, steps, labels and every Monte Carlo completion with its score."""
  with open(path, "w") as f:
    for r, rec in enumerate(records):
      mc = {str(i): {"correct": c, "texts": texts.get((r, i), [])} for i, c in sorted(rec["mc"].items())}
      f.write(json.dumps({
        "row": r, "problem": problem_index[r], "problem_id": solutions.problems[r].id,
        "prompt_ids": solutions.prompt_ids[r], "completion_ids": solutions.completion_ids[r],
        "text": solutions.texts[r], "answer": solutions.answers[r], "outcome": float(solutions.correct_R[r]),
        "step_ends": [int(e) for e in solutions.step_ends[r]], "labels": rec["labels"],
        "label_mask": rec["label_mask"], "first_error": rec["first_error"], "mc": mc,
      }) + "\n")


def load_labels(path: Path, problems: list[Any]) -> tuple[Solutions, list[int], list[dict[str, Any]]]:
  """Reads `save_labels`' file back: (solutions, problem index of each row, records)."""
  recs = [json.loads(line) for line in path.read_text().splitlines()]
  sols = Solutions(
    problems=[problems[r["problem"]] for r in recs], prompt_ids=[r["prompt_ids"] for r in recs],
    completion_ids=[r["completion_ids"] for r in recs],
    step_ends=[np.asarray(r["step_ends"], np.int32) for r in recs], texts=[r["text"] for r in recs],
    answers=[r["answer"] for r in recs], correct_R=np.asarray([r["outcome"] for r in recs], np.float32),
  )
  return sols, [r["problem"] for r in recs], recs


def _make_labels(config, workdir: Path, sampler, params, tokenizer, problems, boundary_ids) -> dict[str, Any]:
  lab, P, N = config.label, int(config.data.max_prompt_len), int(config.rollout.max_new_tokens)
  path, meta_path = workdir / "labels.jsonl", workdir / "labels_meta.json"
  fingerprint = _label_fingerprint(config)
  if path.exists() and meta_path.exists() and json.loads(meta_path.read_text())["fingerprint"] == json.loads(
      json.dumps(fingerprint)):
    sols, index, recs = load_labels(path, problems)
    return {"solutions": sols, "problem_index": index, "records": recs,
            "stats": json.loads(meta_path.read_text())["stats"]}
  t0 = time.perf_counter()
  n, K = int(lab.solutions_per_problem), int(lab.rollouts_per_step)
  prompts = widen(encode_prompts(problems, tokenizer, P), N, tokenizer.pad_id)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  rollout = sample_eval(sampler, params, prompts, n, key, tokenizer,
                        chunk_prompts=max(int(lab.chunk_rows) // n, 1))
  sols = solutions_from_rollout(rollout, boundary_ids)
  by_id = {p.id: i for i, p in enumerate(problems)}
  index = [by_id[p.id] for p in sols.problems]
  texts: dict[tuple[int, int], list[str]] = {}
  calls = []

  def mc_fn(queries):
    correct, cont = prefix_completions(
      sampler, params, sols, queries, K, jax.random.fold_in(key, 1 + len(calls)), tokenizer, prompt_len=P,
      max_new_tokens=N, chunk_prompts=max(int(lab.chunk_rows) // K, 1))
    calls.append(len(queries))
    texts.update({q: t for q, t in zip(queries, cont)})
    return correct

  records = label_solutions(lab.method, sols.correct_R, sols.num_steps, mc_fn, K)
  save_labels(path, sols, index, records, texts)
  labelled = [y for rec in records for y, m in zip(rec["labels"], rec["label_mask"]) if m]
  wrong = [r for r in records if r["first_error"] is not None and r["first_error"] < len(r["labels"])]
  stats = {
    "solutions": len(records), "solution_accuracy": float(np.mean(sols.correct_R)),
    "steps": int(sum(sols.num_steps)), "mean_steps": float(np.mean(sols.num_steps)),
    "labelled_steps": len(labelled), "label_mean": float(np.mean(labelled)) if labelled else 0.0,
    "mc_prefixes": int(sum(calls)), "mc_completions": int(sum(calls)) * K, "mc_rounds": len(calls),
    "wall_s": time.perf_counter() - t0,
  }
  if lab.method == "omega":
    stats["searched_solutions"] = int(np.sum(sols.correct_R < 1.0))
    stats["first_error_mean_frac"] = float(np.mean(
      [r["first_error"] / len(r["labels"]) for r in wrong])) if wrong else None
  meta_path.write_text(json.dumps({"fingerprint": fingerprint, "stats": stats}, indent=2))
  return {"solutions": sols, "problem_index": index, "records": records, "stats": stats}


def _prm_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  p = config.prm
  c = train_defaults(total_steps=int(config.total_steps), batch_size=int(p.batch_size), optimizer=p.optimizer,
                     seed=int(config.seed))
  c.task = "prm"
  c.log_every_steps = int(p.log_every_steps)
  c.eval_every_steps = int(config.total_steps)
  c.checkpoint_every_steps = int(config.checkpoint_every_steps)
  c.keep_checkpoints = int(config.keep_checkpoints)
  c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
  c.sharding = config.sharding
  c.model = ml_collections.ConfigDict(config.model.to_dict())
  c.loss = ml_collections.ConfigDict({"name": "prm", "reduction": "token-mean"})
  return c


def _select(problems, sols: Solutions, scores_RS: np.ndarray, step_mask_RS: np.ndarray, n: int, seed: int):
  """Per-problem correctness of each way of picking one of n answers, and their means with CIs."""
  Pn = len(problems)
  correct_PN = sols.correct_R.reshape(Pn, n)
  answers_PN = [sols.answers[i * n:(i + 1) * n] for i in range(Pn)]
  base = pass_maj_metrics(problems, correct_PN, answers_PN, [n])
  picks: dict[str, np.ndarray] = {"random_pick": correct_PN.mean(axis=1)}
  for reduce in SOLUTION_REDUCTIONS:
    s_PN = np.asarray(prm_solution_scores(scores_RS, step_mask_RS, reduce=reduce)).reshape(Pn, n)
    idx, _ = prm_best_of_n(s_PN)
    picks[f"prm_best_of_n_{reduce}"] = correct_PN[np.arange(Pn), np.asarray(idx)]
  s_PN = np.asarray(prm_solution_scores(scores_RS, step_mask_RS, reduce="min")).reshape(Pn, n)
  ids_PN = np.full((Pn, n), -1, np.int32)
  for i, row in enumerate(answers_PN):
    seen: dict[str, int] = {}
    for j, a in enumerate(row):
      if a is not None:
        ids_PN[i, j] = seen.setdefault(a, len(seen))
  idx, _ = prm_best_of_n(s_PN, ids_PN, vote=True)
  picks["prm_weighted_vote_min"] = correct_PN[np.arange(Pn), np.asarray(idx)]
  maj = [pass_maj_metrics([p], correct_PN[i:i + 1], [answers_PN[i]], [n])[f"maj@{n}"]
         for i, p in enumerate(problems)]
  picks["majority_vote"] = np.asarray(maj)
  picks["oracle_pass@n"] = correct_PN.max(axis=1)
  out = {}
  for name, v in picks.items():
    mean, lo, hi = bootstrap_ci(v, np.mean, n_resamples=2000, seed=seed)
    out[name] = {"acc": mean, "ci95": [lo, hi]}
  flat_s, flat_c = s_PN.reshape(-1), correct_PN.reshape(-1)
  prm_auroc = auroc(flat_s, flat_c) if 0 < flat_c.sum() < flat_c.size else None
  return out, base, prm_auroc


def run_prm(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the whole pipeline in `workdir`; see the module docstring.

  Returns:
    the summary written to WORKDIR/results.json.
  """
  validate(config)
  workdir = start_workdir(config, workdir)
  t0 = time.perf_counter()
  tokenizer = make_tokenizer(config.data.tokenizer)
  boundary_ids = _boundary_ids(tokenizer, config.label.boundary)
  sft_params, sft_summary = run_sft(config, workdir)
  t_sft = time.perf_counter()
  d, ro, ev = config.data, config.rollout, config.eval
  P, N = int(d.max_prompt_len), int(ro.max_new_tokens)
  train_problems = reasoning_problems(d.task, "train", size=int(config.label.problems), seed=d.seed)
  eval_problems = reasoning_problems(d.task, "eval", size=d.eval_size, train_size=d.train_size,
                                     seed=d.seed)
  model_cfg = from_section(config.model)
  mesh, rules = shd.make_mesh(dict(config.mesh)), shd.get_rules(config.sharding)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(config.seed))))[0]
    top_p = float(ro.top_p) or None
    sampler = Sampler(graphdef, SamplingConfig(
      max_new_tokens=N, temperature=float(ro.temperature), top_p=top_p, stop_ids=(tokenizer.eos_id,),
      pad_id=tokenizer.pad_id), mesh=mesh, rules=rules)
    labels = _make_labels(config, workdir, sampler, sft_params, tokenizer, train_problems, boundary_ids)
  t_labels = time.perf_counter()

  sols, index = labels["solutions"], labels["problem_index"]
  recs = labels["records"]
  rows = prm_rows(sols, [r["labels"] for r in recs], [r["label_mask"] for r in recs], P + N)
  n_held = int(round(float(config.label.eval_frac) * int(config.label.problems)))
  held = np.asarray(index) >= int(config.label.problems) - n_held
  take = lambda m: {k: v[m] for k, v in rows.items()}
  bs = int(config.prm.batch_size)
  make_model = lambda rngs: ValueModel(model_cfg, rngs=rngs)
  setup = Setup(
    make_model=make_model, objective=prm_objective(reduction="token-mean"),
    train_batches=CyclingBatches(take(~held), bs, int(config.seed)),
    eval_batches=fixed_batches(take(held), bs) if held.any() else [],
    info={"labels": labels["stats"]}, init_params=start_params(make_model, sft_params, int(config.seed),
                                                                backbone=True))
  prm_summary = train(_prm_config(config), workdir / "prm", setup)
  prm_params = prm_summary["state"].params
  t_prm = time.perf_counter()

  n = int(ev.samples)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    prompts = widen(encode_prompts(eval_problems, tokenizer, P), N, tokenizer.pad_id)
    rollout = sample_eval(sampler, sft_params, prompts, n, jax.random.fold_in(jax.random.key(config.seed), 3),
                          tokenizer, chunk_prompts=max(int(ev.chunk_rows) // n, 1))
    esols = solutions_from_rollout(rollout, boundary_ids)
    erows = prm_rows(esols, None, None, P + N)
    prm_graphdef = nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(config.seed))))[0]
    scores_RS = step_scores(prm_graphdef, prm_params, erows, chunk=int(ev.chunk_rows))
  selection, base, prm_auroc = _select(prompts.problems, esols, scores_RS, erows["step_mask_RS"], n,
                                       int(config.seed))
  t_eval = time.perf_counter()
  results = {
    "task": d.task, "method": config.label.method, "n": n, "eval_problems": len(prompts.problems),
    "selection": selection, "pass_maj": base, "prm_auroc_min": prm_auroc, "labels": labels["stats"],
    "prm": {"final_step": prm_summary.get("final_step"), "last": _scalars(prm_summary.get("last")),
            "eval": _scalars(prm_summary.get("eval"))},
    "sft": sft_summary,
    "wall_s": {"sft": t_sft - t0, "labels": t_labels - t_sft, "prm_train": t_prm - t_labels,
               "eval": t_eval - t_prm, "total": t_eval - t0},
  }
  finish(workdir, results, default=float)
  return results


def _scalars(d: dict[str, Any] | None) -> dict[str, float] | None:
  return None if d is None else {k: float(v) for k, v in d.items() if np.ndim(v) == 0}


__all__ = ["load_labels", "run_prm", "save_labels", "step_end_indices", "validate"]
