"""Weak-to-Strong Reasoning (Yang et al. 2024, GAIR): a strong model refines its own training data, twice.

Setting (`run_w2s_reasoning`, task `w2s_reasoning`): a reasoning-gym task split into a small **gold** set
(worked solutions), an unlabeled **pool** and a held-out **test** set.

* **weak**: a small preset SFT'd on the gold set; its greedy solutions on the pool are the weak labels.
* **strong start**: a larger preset given a short SFT on a few gold examples — the stand-in, for a model
  trained from scratch, of the paper's in-context-learning (few-shot) strong model.
* **Stage I** (final-answer consistency): keep the pool items where the weak answer equals the strong
  start's own greedy answer (`agreement_filter`), and SFT the strong start on those items' solutions (the
  weak's, the strong's or both, `stage1.sources`).
* **Stage II** (contrastive self-consistency): the Stage-I model samples K solutions per pool question; where
  its majority answer holds a vote share >= `stage2.min_share`, a solution with the majority answer is
  *chosen* and one with a different answer *rejected* (`self_consistency_pairs`); then DPO (any pairwise
  loss of the `preference` task) with the Stage-I model as reference.
* **ceiling**: the strong start SFT'd on the pool's gold solutions for as many steps as Stage I;
  **naive W2S** (optional): the strong start SFT'd on every weak solution, unfiltered.

Starts from the RL runs' SFT phase (`weak.sft` / `strong.sft`, the keys of configs/rl_base.py's `sft`
section): the model is SFT'd (or reloaded) by `rl.sft_init.run_sft` on the task's `data.train_size` train
problems, in its shared `sft.workdir`, instead of on the gold set; the test set is then that corpus's
held-out split (the problems configs/grpo_gain.py and configs/w2sr.py evaluate on) and the pool excludes
every train and test question (`task_splits`).

No stage sees a gold answer of the pool or test set; the scorer is used only to report how precise each
selection was and the held-out pass@1 (mean of c/n over n samples at `eval.temperature`), greedy accuracy
and maj@n of every model. Every SFT/DPO run is a resumable run folder under WORKDIR; selections are cached
as JSON under `WORKDIR/stages/`, and `results.json` holds the table.

The SFT and sampling helpers (`sft_on_pairs`, `sample_solutions`) live in `recipes/solutions.py`, shared with
`easy_to_hard.py`. Legend: P problems, K samples per problem.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from w2s_jax.config_files import start_workdir
from w2s_jax.data import preference_pairs, reasoning
from w2s_jax.data.sft_sources import reasoning_prompt
from w2s_jax.evals.metrics import majority_vote
from w2s_jax.models.presets import from_section
from w2s_jax.pipeline_shell import finish, memo
from w2s_jax.recipes.solutions import rollout_matrices, sample_solutions, sft_on_pairs, solution_pairs
from w2s_jax.rl.evaluate import pass_maj_metrics
from w2s_jax.rl.roles import abstract_graphdef, prepare_role, role_config
from w2s_jax.rl.sft_init import sft_workdir
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import train
from w2s_jax.train.preference_tasks import records_setup
from w2s_jax.train.pretrain import Rung
from w2s_jax.train.tasks import make_tokenizer
from w2s_jax.w2s.metrics import pgr

# ------------------------------------------------------------------------------------------------
# Selection rules (pure).
# ------------------------------------------------------------------------------------------------


def agreement_filter(weak_answers: Sequence[str | None], strong_answers: Sequence[str | None]) -> np.ndarray:
  """Indices of the items whose weak and strong final answers are both stated and equal (after strip).

  Stage I of Weak-to-Strong Reasoning keeps only these items: two models that disagree are unlikely to
  both be right, so agreement selects the weak labels that are more often correct.
  """
  if len(weak_answers) != len(strong_answers):
    raise ValueError(f"{len(weak_answers)} weak answers but {len(strong_answers)} strong answers")
  keep = [i for i, (w, s) in enumerate(zip(weak_answers, strong_answers))
          if w is not None and s is not None and w.strip() != "" and w.strip() == s.strip()]
  return np.asarray(keep, np.int64)


def vote_share(answers: Sequence[str | None]) -> tuple[str | None, float]:
  """(majority answer, its share of all K samples); unstated answers (None) count in K but never win."""
  if not answers:
    raise ValueError("vote_share needs at least one answer")
  winner = majority_vote(list(answers))
  if winner is None:
    return None, 0.0
  return winner, sum(a == winner for a in answers) / len(answers)


def self_consistency_pairs(
  problem_id: str, prompt: str, texts: Sequence[str], answers: Sequence[str | None], *, min_share: float,
  max_pairs: int, include_unanswered: bool = False, seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Stage-II contrastive pairs of one question from the strong model's own K samples.

  The majority answer is taken as right when its vote share is >= `min_share`: chosen = a sample stating
  it, rejected = a sample stating a different answer (also one stating none when `include_unanswered`).
  Repeated texts count once; pairs are drawn as `preference_pairs.build_pairs` draws them.

  Returns:
    (pair records, info) with info `majority`, `share` and `confident` (share >= min_share).
  """
  if len(texts) != len(answers):
    raise ValueError(f"{len(texts)} texts but {len(answers)} answers")
  if not 0.0 <= min_share <= 1.0:
    raise ValueError(f"stage2.min_share must be in [0, 1], got {min_share}")
  winner, share = vote_share(answers)
  info = {"majority": winner, "share": share, "confident": winner is not None and share >= min_share}
  if not info["confident"]:
    return [], info
  kept = [(t, 1.0 if a == winner else 0.0) for t, a in zip(texts, answers)
          if t.strip() and (a is not None or include_unanswered)]
  pairs = preference_pairs.build_pairs(problem_id, prompt, [t for t, _ in kept], [s for _, s in kept],
                                       max_pairs=max_pairs, correct_at=1.0, seed=seed)
  return pairs, info


# ------------------------------------------------------------------------------------------------
# Held-out metrics.
# ------------------------------------------------------------------------------------------------


def heldout_metrics(policy: Rung, problems: Sequence[reasoning.Problem], ev: ml_collections.ConfigDict,
                    *, prompt_len: int, tokenizer: Any) -> dict[str, float]:
  """Held-out pass@1 (mean c/n of `ev.samples` samples at `ev.temperature`), maj@n and greedy accuracy."""
  n = int(ev.samples)
  kw = dict(max_new_tokens=int(ev.max_new_tokens), prompt_len=prompt_len, tokenizer=tokenizer,
            seed=int(ev.seed))
  sampled = sample_solutions(policy, problems, n=n, temperature=float(ev.temperature), **kw)
  correct, answers, _ = rollout_matrices(sampled, n)
  out = pass_maj_metrics(sampled.problems, correct, answers, [n])
  greedy = sample_solutions(policy, problems, n=1, temperature=0.0, **kw)
  out["greedy_accuracy"] = float(np.mean(greedy.correct_R))
  out["problems"] = len(sampled.problems)
  return out


def task_splits(d: ml_collections.ConfigDict) -> dict[str, list[reasoning.Problem]]:
  """The pipeline's `gold`, `pool` and `test` problems of the config's `data` section.

  Without `data.train_size`: disjoint fresh splits (`split_problems`). With it (the starts were SFT'd on
  the task's first `train_size` train problems): `test` is that corpus's held-out split, exactly
  `sft_sources.reasoning_problems(task, "eval", ...)`; `pool` is a fresh split sharing no question with
  the train or test problems; `gold` is the first `gold_size` train problems.
  """
  seed = int(d.seed)
  options = d.options.to_dict() if d.get("options") else None
  sizes = {"gold": int(d.gold_size), "pool": int(d.pool_size), "test": int(d.eval_size)}
  train_size = int(d.get("train_size", 0))
  if not train_size:
    return split_problems(d.task, sizes, seed=seed, options=options)
  train = reasoning.generate(d.task, "train", train_size, seed=seed)
  seen = {p.prompt for p in train}
  test = reasoning.generate(d.task, "test", sizes["test"], seed=seed, exclude=seen)
  seen |= {p.prompt for p in test}
  pool = reasoning.generate(d.task, "pool", sizes["pool"], seed=seed, exclude=seen)
  return {"gold": train[:sizes["gold"]], "pool": pool, "test": test}


def split_problems(task: str, sizes: dict[str, int], *, seed: int, options: dict[str, Any] | None,
                   ) -> dict[str, list[reasoning.Problem]]:
  """Disjoint splits of `task` (no question in two splits), generated in the order of `sizes`."""
  out, seen = {}, set()
  for split, size in sizes.items():
    out[split] = reasoning.generate(task, split, size, seed=seed, exclude=seen, options=options)
    seen |= {p.prompt for p in out[split]}
  return out


# ------------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails before any training on a config the pipeline cannot run, naming the key."""
  d = config.data
  for key in ("pool_size", "eval_size", "seq_len", "max_prompt_len", "max_new_tokens"):
    if int(d[key]) <= 0:
      raise ValueError(f"data.{key} must be > 0, got {d[key]}")
  if config.stage1.sources not in ("weak", "strong", "both"):
    raise ValueError(f"stage1.sources must be 'weak', 'strong' or 'both', got {config.stage1.sources!r}")
  if not 0.0 <= float(config.stage2.min_share) <= 1.0:
    raise ValueError(f"stage2.min_share must be in [0, 1], got {config.stage2.min_share}")
  if int(config.stage2.samples) < 2:
    raise ValueError(f"stage2.samples must be >= 2 (a vote needs samples), got {config.stage2.samples}")
  if int(config.eval.samples) < 1:
    raise ValueError(f"eval.samples must be >= 1, got {config.eval.samples}")
  if config.weak.model.vocab_size != config.strong.model.vocab_size:
    raise ValueError("weak.model.vocab_size and strong.model.vocab_size must be equal (one tokenizer)")
  from_phase = [role for role in ("weak", "strong") if "sft" in config[role]]
  if from_phase and int(d.get("train_size", 0)) <= 0:
    raise ValueError(f"{from_phase[0]}.sft trains on the task's train split: set data.train_size > 0")
  if from_phase and d.get("options"):
    raise ValueError(f"{from_phase[0]}.sft trains on the task's default difficulty: remove data.options")
  needs_gold = {"weak": "weak" not in from_phase, "strong": "strong" not in from_phase}
  if needs_gold["weak"] and int(d.gold_size) <= 0:
    raise ValueError("data.gold_size must be > 0: the weak model is SFT'd on the gold set (or give weak.sft)")
  if needs_gold["strong"] and not 0 < int(config.strong.start_examples) <= int(d.gold_size):
    raise ValueError(f"strong.start_examples must be in [1, data.gold_size={d.gold_size}], got "
                     f"{config.strong.start_examples} (or give strong.sft)")
  for role in ("weak", "strong"):
    max_len = from_section(config[role].model).max_seq_len
    need = max(int(d.seq_len), int(d.max_prompt_len) + int(d.max_new_tokens))
    if role in from_phase:
      need = max(need, int(config[role].sft.seq_len))
    if max_len < need:
      raise ValueError(f"{role}.model max_seq_len {max_len} < {need} (data.seq_len, or max_prompt_len + "
                       "max_new_tokens): raise its overrides.max_seq_len")


def sft_phase_start(config: ml_collections.ConfigDict, role: str, workdir: Path) -> Rung:
  """`config[role]` SFT'd (or reloaded) by the RL runs' SFT phase in `workdir/role/sft` or `sft.workdir`."""
  model_cfg, params, summary = prepare_role(config, role, workdir)
  eval_loss = float((summary.get("eval") or {}).get("eval_loss", float("nan")))
  folder = sft_workdir(role_config(config, role), workdir / role)
  return Rung(role, model_cfg, abstract_graphdef(model_cfg), params, eval_loss, folder)


def _stage1_data(weak: Rung, start: Rung, pool: list[reasoning.Problem], cfg: ml_collections.ConfigDict,
                 tokenizer: Any) -> dict[str, Any]:
  """Weak and strong-start greedy solutions on the pool, the agreement filter and the Stage-I pairs."""
  kw = dict(n=1, temperature=0.0, max_new_tokens=int(cfg.data.max_new_tokens),
            prompt_len=int(cfg.data.max_prompt_len), seed=int(cfg.seed), tokenizer=tokenizer)
  w, s = sample_solutions(weak, pool, **kw), sample_solutions(start, pool, **kw)
  if [p.id for p in w.problems] != [p.id for p in s.problems]:
    raise ValueError("weak and strong rollouts cover different problems")
  keep = agreement_filter(w.answers, s.answers)
  sources = cfg.stage1.sources  # weak | strong | both (checked by `validate`)
  pairs = []
  for i in keep:
    prompt = reasoning_prompt(w.problems[i])
    pairs += [(prompt, w.texts[i])] if sources in ("weak", "both") else []
    pairs += [(prompt, s.texts[i])] if sources in ("strong", "both") and s.texts[i] != w.texts[i] else []
  weak_answered = [i for i, a in enumerate(w.answers) if a is not None and w.texts[i].strip()]
  precision = lambda idx: float(np.mean(w.correct_R[idx])) if len(idx) else float("nan")
  return {
    "stage1_pairs": pairs,
    "weak_pairs": [(reasoning_prompt(w.problems[i]), w.texts[i]) for i in weak_answered],
    "stats": {"pool": len(w.problems), "agreed": int(len(keep)), "stage1_pairs": len(pairs),
              "weak_pool_accuracy": float(np.mean(w.correct_R)),
              "strong_start_pool_accuracy": float(np.mean(s.correct_R)),
              "agreed_label_precision": precision(keep),
              "weak_label_precision": precision(np.asarray(weak_answered, np.int64))},
  }


def _stage2_records(stage1: Rung, pool: list[reasoning.Problem], cfg: ml_collections.ConfigDict,
                    tokenizer: Any) -> dict[str, Any]:
  """K samples per pool question from the Stage-I model and the self-consistency pairs (1/5 held out)."""
  s2 = cfg.stage2
  K = int(s2.samples)
  ro = sample_solutions(stage1, pool, n=K, temperature=float(s2.temperature),
                        max_new_tokens=int(cfg.data.max_new_tokens), prompt_len=int(cfg.data.max_prompt_len),
                        seed=int(cfg.seed) + 1, tokenizer=tokenizer)
  correct, answers, texts = rollout_matrices(ro, K)
  splits: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
  confident, with_pairs, true_pairs = 0, 0, []
  for i, p in enumerate(ro.problems):
    pairs, info = self_consistency_pairs(
      p.id, reasoning_prompt(p), texts[i], answers[i], min_share=float(s2.min_share),
      max_pairs=int(s2.max_pairs_per_prompt), include_unanswered=bool(s2.include_unanswered),
      seed=int(cfg.seed))
    confident += info["confident"]
    if not pairs:
      continue
    splits["eval" if with_pairs % 5 == 4 else "train"] += pairs
    with_pairs += 1
    # For the report only: is the chosen side truly right and the rejected side truly wrong?
    score = {t: c for t, c in zip(texts[i], correct[i])}
    true_pairs += [float(score[q["chosen"]] >= 1 and score[q["rejected"]] < 1) for q in pairs]
  return {"records": {k: {"pairs": v, "unpaired": []} for k, v in splits.items()},
          "stats": {"questions": len(ro.problems), "samples": K, "confident": confident,
                    "with_pairs": with_pairs, "train_pairs": len(splits["train"]),
                    "eval_pairs": len(splits["eval"]), "sample_accuracy": float(np.mean(correct)),
                    "pair_precision": float(np.mean(true_pairs)) if true_pairs else float("nan")}}


def _dpo(stage1: Rung, records: dict[str, Any], cfg: ml_collections.ConfigDict, workdir: Path,
         tokenizer: Any) -> Rung:
  s2 = cfg.stage2
  c = train_defaults(total_steps=int(s2.total_steps), batch_size=int(s2.batch_size), optimizer=s2.optimizer,
                     seed=int(cfg.seed))
  c.task = "preference"
  c.log_every_steps = max(int(s2.total_steps) // 10, 1)
  c.eval_every_steps = int(s2.total_steps)
  c.checkpoint_every_steps = int(s2.total_steps)
  setup = records_setup(records, stage1.model_cfg, stage1.graphdef, stage1.params, tokenizer,
                        objective=s2.loss.to_dict(), batch_size=int(s2.batch_size),
                        seq_len=int(cfg.data.seq_len), eval_batches=4, seed=int(cfg.seed))
  summary = train(c, workdir, setup)
  return Rung("stage2", stage1.model_cfg, stage1.graphdef, summary["state"].params, float("nan"), workdir)


def run_w2s_reasoning(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the two-stage Weak-to-Strong Reasoning pipeline; see the module docstring.

  Returns:
    the summary written to `WORKDIR/results.json`: `heldout` (per model: pass@1, maj@n, greedy
    accuracy), `stage1` and `stage2` selection statistics, `pgr` of each stage and `wall_s`.
  """
  t0 = time.perf_counter()
  validate(config)
  workdir = start_workdir(config, workdir)
  tok = make_tokenizer(config.data.tokenizer)
  d = config.data
  splits = task_splits(d)
  gold, pool, test = splits["gold"], splits["pool"], splits["test"]
  eval_pairs = solution_pairs(test[:64])
  seq = dict(seq_len=int(d.seq_len), seed=int(config.seed), tokenizer=d.tokenizer)

  def sft(name, model, pairs, run, init=None):
    return sft_on_pairs(name, model, pairs, eval_pairs, workdir / name, steps=int(run.total_steps),
                        batch_size=int(run.batch_size), optimizer=run.optimizer, init=init, **seq)

  if "sft" in config.weak:
    weak = sft_phase_start(config, "weak", workdir)
  else:
    weak = sft("weak", config.weak.model, solution_pairs(gold), config.weak)
  if "sft" in config.strong:
    start = sft_phase_start(config, "strong", workdir)
  else:
    start = sft("strong_start", config.strong.model,
                solution_pairs(gold[:int(config.strong.start_examples)]), config.strong.start)
  stages = workdir / "stages"
  s1 = memo(stages / "stage1.json", lambda: _stage1_data(weak, start, pool, config, tok))
  models = {"weak": weak, "strong_start": start}
  s1_stats, s2_stats = dict(s1["stats"]), {}
  # ~2 examples fill a packed row: fewer than 4·batch pairs cannot feed the SFT loop's batches.
  if len(s1["stage1_pairs"]) < 4 * int(config.stage1.batch_size):
    s1_stats["skipped"] = s2_stats["skipped"] = (
      f"only {len(s1['stage1_pairs'])} Stage-I pairs for batches of {config.stage1.batch_size}: the weak and "
      "strong-start answers rarely agree (train them longer or grow data.pool_size)")
  else:
    stage1 = sft("stage1", config.strong.model, [tuple(p) for p in s1["stage1_pairs"]], config.stage1,
                 init=start)
    models["stage1"] = stage1
    s2 = memo(stages / "stage2.json", lambda: _stage2_records(stage1, pool, config, tok))
    s2_stats = dict(s2["stats"])
    records = s2["records"]
    if len(records["train"]["pairs"]) < int(config.stage2.batch_size) or not records["eval"]["pairs"]:
      s2_stats["skipped"] = (f"too few self-consistency pairs ({s2_stats['train_pairs']} train, "
                             f"{s2_stats['eval_pairs']} held out) for a batch of {config.stage2.batch_size}")
    else:
      models["stage2"] = _dpo(stage1, s2["records"], config, workdir / "stage2", tok)
  if config.baselines.naive_w2s:
    models["naive_w2s"] = sft("naive_w2s", config.strong.model, [tuple(p) for p in s1["weak_pairs"]],
                              config.stage1, init=start)
  if config.baselines.ceiling:
    models["ceiling"] = sft("ceiling", config.strong.model, solution_pairs(pool), config.stage1, init=start)

  heldout = {name: memo(stages / f"eval_{name}.json", lambda m=m: heldout_metrics(
    m, test, config.eval, prompt_len=int(d.max_prompt_len), tokenizer=tok)) for name, m in models.items()}
  summary: dict[str, Any] = {"heldout": heldout, "stage1": s1_stats, "stage2": s2_stats}
  if "ceiling" in heldout:
    w, c = heldout["weak"]["pass@1"], heldout["ceiling"]["pass@1"]
    # PGR on pass@1; None where the ceiling does not beat the weak model (undefined).
    values = {k: pgr(w, c, heldout[k]["pass@1"]) for k in ("stage1", "stage2", "naive_w2s") if k in heldout}
    summary["pgr"] = {k: None if np.isnan(v) else v for k, v in values.items()}
  summary["wall_s"] = time.perf_counter() - t0
  finish(workdir, summary)
  return summary
