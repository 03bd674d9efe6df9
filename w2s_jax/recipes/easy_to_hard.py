"""Easy-to-hard generalization (Sun et al. 2024): a verifier trained on EASY problems re-ranks HARD ones.

Setting (`run_easy_to_hard`, task `easy_to_hard`): one reasoning-gym task generated over a range of a
difficulty knob (`data.options`, e.g. `chain_sum` with 2–3 terms) and split by the knob's value in each
problem (`difficulty`: a metadata field, the max/min of a list field such as `gcd`'s `max:numbers`, or
the worked solution's length; `split_by_difficulty`: <= `easy_max` is easy, >= `hard_min` is hard).

1. **Policy**: a preset SFT'd on worked solutions of `policy.sft_levels` ("easy", or "easy,hard" when an
   easy-only policy cannot solve any hard problem at this scale — the config says which it used).
2. **Verifier** (outcome reward model): the policy's backbone with a zero-initialised 2-class head
   (`SequenceClassifier`, as in the W2S protocol's `protocol.finetune`; `train_verifier`), trained with
   cross-entropy on (problem, sampled solution) texts of EASY problems only, labelled by the task's scorer.
   Human-style supervision therefore never touches a hard problem.
3. **Re-ranking** on held-out easy and hard problems, N policy samples each (`rerank_metrics`): random
   pick (expected accuracy = pass@1), majority vote, verifier best-of-N, verifier-weighted vote (the
   paper's re-ranking), and the oracle best-of-N (pass@N); plus the verifier's AUROC on each level.
4. **RL stage** (`rl.enabled`, on in arg `gcd`): GRPO through `rl.loop.train_rl` from the policy's SFT
   start, on the task's default problem distribution (all levels, whose held-out easy/hard problems are
   the test sets above), with reward = the easy-trained verifier's probability of "correct"
   (`verifier_reward`, passed as `train_rl(reward_fn=...)` with `reward.correct_coef = 0`, so the gold
   answer never enters training); as a control, the same budget with the gold reward (`rl.gold_control`).
   Reported: pass@1 on the held-out easy and hard problems before and after each arm (same samples, seed
   and temperature as the re-ranking table). In this mode the policy is the RL config's SFT phase
   (`rl.base`'s `sft` section, e.g. configs/grpo_gain.py's 600-step `gcd` SFT) in `policy_sft/` (or
   `rl.sft_workdir`), so it is both the re-ranked policy and RL's start; `data.options` must then be
   empty (RL draws the task's default distribution) and `policy.sft_levels` does not apply.

Workdir: `policy/` (or `policy_sft/`) and `verifier/` run folders, `rl_verifier/` and `rl_gold/` (the RL
arms), `stages/*.json` (cached samples and scores; `rl_verifier_rewards.jsonl`: every text the RL loop
asked the verifier to score, with its score), `config.json`, `results.json`.
Legend: P problems, K samples per problem, R rollout rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from w2s_jax.config_files import load_config, start_workdir
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_problems, reasoning_prompt
from w2s_jax.evals.metrics import auroc, majority_vote
from w2s_jax.evals.selection import best_of_n, weighted_vote
from w2s_jax.models.presets import from_section
from w2s_jax.pipeline_shell import finish, memo
from w2s_jax.recipes.solutions import rollout_matrices, sample_solutions, sft_on_pairs, solution_pairs
from w2s_jax.rl.loop import train_rl
from w2s_jax.rl.roles import abstract_graphdef
from w2s_jax.rl.sft_init import run_sft
from w2s_jax.train.pretrain import Rung
from w2s_jax.train.tasks import make_tokenizer
from w2s_jax.w2s import classify, protocol
from w2s_jax.w2s.protocol import TrainSpec

LEVELS = ("easy", "hard")

# ------------------------------------------------------------------------------------------------
# Pure parts: the difficulty split and the re-ranking metrics.
# ------------------------------------------------------------------------------------------------


def difficulty(problem: reasoning.Problem, key: str) -> float:
  """The value of difficulty knob `key` of a problem.

  `key` is a field of its reasoning-gym metadata (e.g. `num_terms`), `max:FIELD` / `min:FIELD` for the
  largest / smallest entry of a list field (e.g. `max:numbers`, `gcd`'s biggest number), or
  `solution_steps`, the number of lines of its worked solution (for `gcd`: Euclid's divisions + 1).
  """
  if key == "solution_steps":
    return float(len(problem.steps))
  meta = json.loads(problem.metadata)
  agg, _, field = key.rpartition(":")
  if agg not in ("", "max", "min") or field not in meta:
    raise ValueError(f"data.difficulty_key {key!r} is not a field, max:FIELD or min:FIELD of {problem.task} "
                     f"metadata (keys: {sorted(meta)})")
  if agg:
    return float({"max": max, "min": min}[agg](meta[field]))
  return float(meta[field])


def split_by_difficulty(problems: Sequence[reasoning.Problem], key: str, *, easy_max: float, hard_min: float
                        ) -> tuple[list[reasoning.Problem], list[reasoning.Problem]]:
  """(easy, hard): problems with `key` <= easy_max, and with `key` >= hard_min (others are dropped)."""
  if easy_max >= hard_min:
    raise ValueError(f"data.easy_max ({easy_max}) must be below data.hard_min ({hard_min})")
  easy = [p for p in problems if difficulty(p, key) <= easy_max]
  hard = [p for p in problems if difficulty(p, key) >= hard_min]
  return easy, hard


def rerank_metrics(correct_PK: np.ndarray, answers_PK: Sequence[Sequence[str | None]],
                   scores_PK: np.ndarray) -> dict[str, float]:
  """Accuracy of each way of choosing one of K samples per problem, averaged over P problems.

  Args:
    correct_PK: 1 where sample k of problem p is correct (the task's scorer).
    answers_PK: the stated final answers (None = none stated; never chosen by a vote).
    scores_PK: the verifier's score of each sample (higher = more likely correct).

  Returns:
    `random` (expected accuracy of a uniformly random sample = pass@1), `majority` (most frequent
    answer), `verifier_best_of_n` (highest-scoring sample with a stated answer), `verifier_weighted_vote`
    (answer with the largest total score), `oracle` (any sample correct = pass@K). A problem where no
    sample states an answer counts as wrong for the answer-based picks.
  """
  correct_PK = np.asarray(correct_PK, np.float64) >= 1.0
  scores_PK = np.asarray(scores_PK, np.float64)
  if correct_PK.shape != scores_PK.shape or len(answers_PK) != correct_PK.shape[0]:
    raise ValueError(f"shapes differ: correct {correct_PK.shape}, scores {scores_PK.shape}, "
                     f"{len(answers_PK)} answer rows")
  picks: dict[str, list[float]] = {"majority": [], "verifier_best_of_n": [], "verifier_weighted_vote": []}

  def correct_of(p: int, answer: str | None) -> float:  # an answer's correctness, from a sample stating it
    return float(any(correct_PK[p, k] for k, a in enumerate(answers_PK[p]) if a == answer and a is not None))

  for p, answers in enumerate(answers_PK):
    stated = np.asarray([a is not None for a in answers])
    if not stated.any():
      for v in picks.values():
        v.append(0.0)
      continue
    picks["majority"].append(correct_of(p, majority_vote(list(answers))))
    picks["verifier_best_of_n"].append(float(correct_PK[p, best_of_n(scores_PK[p], stated)]))
    picks["verifier_weighted_vote"].append(correct_of(p, weighted_vote(list(answers), scores_PK[p])))
  out = {"random": float(correct_PK.mean()), **{k: float(np.mean(v)) for k, v in picks.items()},
         "oracle": float(correct_PK.any(axis=1).mean())}
  return out


# ------------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------------


def _problems(config: ml_collections.ConfigDict, exclude: set[str]) -> dict[str, list[reasoning.Problem]]:
  """Disjoint policy-SFT, verifier-train and test problems, split into levels by the difficulty knob."""
  d = config.data
  options = d.options.to_dict()
  wanted = {"sft": int(d.sft_size), "verifier": int(d.verifier_size), "test": int(d.eval_size)}
  out: dict[str, list[reasoning.Problem]] = {}
  seen = set(exclude)
  for split, size in wanted.items():
    if size == 0:  # e.g. no policy SFT split when the policy comes from the RL config's SFT
      out[f"{split}_easy"], out[f"{split}_hard"] = [], []
      continue
    drawn = reasoning.generate(d.task, f"e2h-{split}", int(d.draw_factor) * size, seed=int(d.seed),
                               exclude=seen, options=options)
    seen |= {p.prompt for p in drawn}
    easy, hard = split_by_difficulty(drawn, d.difficulty_key, easy_max=float(d.easy_max),
                                     hard_min=float(d.hard_min))
    if len(easy) < size or len(hard) < size:
      raise ValueError(f"split {split!r}: {len(easy)} easy / {len(hard)} hard of {len(drawn)} drawn "
                       f"problems, {size} of each wanted; raise data.draw_factor, widen data.options or move "
                       "data.easy_max/hard_min")
    out[f"{split}_easy"], out[f"{split}_hard"] = easy[:size], hard[:size]
  return out


def _samples(policy, problems, k: int, config: ml_collections.ConfigDict, seed: int, tok) -> dict[str, Any]:
  ro = sample_solutions(policy, problems, n=k, temperature=float(config.sampling.temperature),
                        max_new_tokens=int(config.data.max_new_tokens),
                        prompt_len=int(config.data.max_prompt_len), seed=seed, tokenizer=tok)
  correct, answers, texts = rollout_matrices(ro, k)
  return {"ids": [p.id for p in ro.problems], "prompts": [reasoning_prompt(p) for p in ro.problems],
          "gold": [p.answer for p in ro.problems], "correct": correct.tolist(), "answers": answers,
          "texts": texts}


def _records(s: dict[str, Any]) -> list[dict[str, Any]]:
  """Verifier records (`txt` = prompt + solution, `hard_label` = correct) of every sample."""
  return [{"txt": prompt + text, "hard_label": int(c >= 1.0)}
          for prompt, texts, cs in zip(s["prompts"], s["texts"], s["correct"]) for text, c in zip(texts, cs)]


def train_verifier(policy: Rung, train: classify.Encoded, spec: TrainSpec, seed: int, workdir: Path
                   ) -> tuple[nnx.GraphDef, Any]:
  """The verifier: `policy`'s backbone + a 2-class head trained with cross-entropy on `train`
  (`protocol.train_classifier`, resumable in `workdir`), as (graphdef, params): the RL stage scores new
  texts with it."""
  graphdef, params, _ = protocol.train_classifier(policy, train, "xent", spec, seed, workdir)
  return graphdef, params


def verifier_reward(graphdef: nnx.GraphDef, params: Any, tokenizer: Any, max_len: int, *,
                    log_path: Path | None = None, batch_size: int = 64
                    ) -> Callable[[Sequence[reasoning.Problem], Sequence[str]], np.ndarray]:
  """The RL loop's learned reward: `fn(problems_R, texts_R) -> scores_R`, the verifier's P(correct) of
  each (problem prompt + completion) text, encoded exactly like the verifier's training records.

  With `log_path`, every call appends one JSON line {"ids", "texts", "scores"} (an audit of what RL saw).
  """
  def score(problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str]) -> np.ndarray:
    if len(problems_R) != len(texts_R):
      raise ValueError(f"{len(problems_R)} problems for {len(texts_R)} texts")
    records = [{"txt": reasoning_prompt(p) + t, "hard_label": 0} for p, t in zip(problems_R, texts_R)]
    scores_R = classify.predict(graphdef, params, classify.encode(records, tokenizer, max_len),
                                batch_size)[:, 1].astype(np.float64)
    if log_path is not None:
      with open(log_path, "a") as f:
        f.write(json.dumps({"ids": [p.id for p in problems_R], "texts": list(texts_R),
                            "scores": scores_R.tolist()}) + "\n")
    return scores_R

  return score


def rl_config(config: ml_collections.ConfigDict, arm: str, sft_workdir: str) -> ml_collections.ConfigDict:
  """The RL config of one arm ("verifier": reward = the verifier's score only; "gold": the task's scorer),
  from `rl.base` (a config name, with `rl.base_arg`) and the e2h config's `rl` budget."""
  if arm not in ("verifier", "gold"):
    raise ValueError(f"RL arm must be 'verifier' or 'gold', got {arm!r}")
  r = config.rl
  c = load_config(str(r.base), str(r.base_arg) or None)
  if c.data.task != config.data.task:
    raise ValueError(f"rl.base {r.base!r} trains on {c.data.task!r}, data.task is {config.data.task!r}")
  c.task, c.seed = "rl", int(config.seed)
  c.sft.workdir = sft_workdir
  c.total_steps = int(r.total_steps)
  c.checkpoint_every_steps = int(r.total_steps)
  c.rollout.prompts_per_step, c.rollout.group_size = int(r.prompts_per_step), int(r.group_size)
  c.train.minibatch_size = int(r.minibatch_size)
  c.optimizer.lr = float(r.lr)
  c.eval.samples, c.eval_every_steps = 0, 0  # evaluated by the pipeline on its easy/hard test sets
  c.reward.correct_coef = 0.0 if arm == "verifier" else 1.0
  c.reward.learned_coef = 1.0 if arm == "verifier" else 0.0
  return c


def _policy_rung(cfg: ml_collections.ConfigDict, params: Any, name: str, folder: Path) -> Rung:
  """A Transformer of the RL config's `model` with `params`, as a `Rung` (what the sampler reads)."""
  model_cfg = from_section(cfg.model)
  return Rung(name, model_cfg, abstract_graphdef(model_cfg), params, float("nan"), folder)


def _policy_from_sft(config: ml_collections.ConfigDict, workdir: Path) -> tuple[Rung, str]:
  """The RL stage's start as the re-ranked policy: `rl.base`'s SFT phase (run or reloaded)."""
  sft_dir = str(config.rl.sft_workdir) or str(workdir / "policy_sft")
  cfg = rl_config(config, "gold", sft_dir)
  params, _ = run_sft(cfg, workdir)
  return _policy_rung(cfg, params, "policy", Path(sft_dir)), sft_dir


def _validate(config: ml_collections.ConfigDict) -> None:
  if config.rl.enabled and config.data.options.to_dict():
    raise ValueError("rl.enabled needs empty data.options: train_rl draws the task's default distribution, "
                     "which the easy/hard test sets must come from")
  if config.rl.enabled and config.data.max_new_tokens != load_config(
      str(config.rl.base), str(config.rl.base_arg) or None).rollout.max_new_tokens:
    raise ValueError("data.max_new_tokens must equal rl.base's rollout.max_new_tokens (same sampling)")


def _pass1(s: dict[str, Any]) -> float:
  return float(np.mean(s["correct"]))


def run_easy_to_hard(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the easy-to-hard pipeline; see the module docstring.

  Returns:
    the summary written to `WORKDIR/results.json`: per level the re-ranking accuracies and the verifier's
    AUROC, the verifier's training-set statistics, the RL stage's pass@1 table (`rl`) and `wall_s`.
  """
  t0 = time.perf_counter()
  _validate(config)
  workdir = start_workdir(config, workdir)
  tok = make_tokenizer(config.data.tokenizer)
  rl_on = bool(config.rl.enabled)
  exclude: set[str] = set()
  if rl_on:  # the policy's SFT and RL problems (the task's train split) stay out of every e2h split
    rc = rl_config(config, "gold", "")
    exclude = {p.prompt for p in reasoning_problems(rc.data.task, "train", size=int(rc.data.train_size),
                                                    seed=int(rc.data.seed))}
  probs = _problems(config, exclude)
  levels = [lv.strip() for lv in str(config.policy.sft_levels).split(",")]
  if not levels or any(lv not in LEVELS for lv in levels):
    raise ValueError(f"policy.sft_levels must list levels of {LEVELS}, got {config.policy.sft_levels!r}")
  if rl_on:
    policy, sft_dir = _policy_from_sft(config, workdir)
    levels = ["default distribution (rl.base's SFT)"]
  else:
    sft_problems = [p for lv in levels for p in probs[f"sft_{lv}"]]
    sft_problems = [sft_problems[i] for i in np.random.default_rng(0).permutation(len(sft_problems))]
    pol = config.policy
    policy = sft_on_pairs(
      "policy", pol.model, solution_pairs(sft_problems), solution_pairs(probs["test_easy"][:32]),
      workdir / "policy", steps=int(pol.total_steps), batch_size=int(pol.batch_size), optimizer=pol.optimizer,
      seq_len=int(config.data.seq_len), seed=int(config.seed), tokenizer=config.data.tokenizer)
  stages = workdir / "stages"
  K = int(config.sampling.samples)
  per_problem = int(config.verifier.samples_per_problem)
  train_s = memo(stages / "verifier_train_samples.json", lambda: _samples(
    policy, probs["verifier_easy"], per_problem, config, int(config.seed) + 1, tok))
  tests = {lv: memo(stages / f"test_{lv}_samples.json", lambda lv=lv: _samples(
    policy, probs[f"test_{lv}"], K, config, int(config.seed) + 2, tok)) for lv in LEVELS}

  v = config.verifier
  max_len = int(config.data.seq_len)
  train_enc = classify.encode(_records(train_s), tok, max_len)
  test_enc = [classify.encode(_records(tests[lv]), tok, max_len) for lv in LEVELS]
  spec = TrainSpec(mode="finetune", steps=int(v.total_steps), batch_size=int(v.batch_size), lr=float(v.lr))
  v_graphdef, v_params = train_verifier(policy, train_enc, spec, int(config.seed), workdir / "verifier")
  scores = memo(stages / "verifier_scores.json", lambda: {
    lv: classify.predict(v_graphdef, v_params, enc)[:, 1].tolist() for lv, enc in zip(LEVELS, test_enc)})
  summary: dict[str, Any] = {
    "verifier_train": {"problems": len(train_s["ids"]), "samples": len(train_enc),
                       "positive_frac": float(train_enc.hard_N.mean())},
    "policy_sft_levels": levels,
  }
  for lv, enc in zip(LEVELS, test_enc):
    s = tests[lv]
    scores_PK = np.asarray(scores[lv]).reshape(len(s["ids"]), K)
    row = rerank_metrics(np.asarray(s["correct"]), s["answers"], scores_PK)
    labels = enc.hard_N
    row["verifier_auroc"] = auroc(np.asarray(scores[lv]), labels) if 0 < labels.mean() < 1 else None
    row["problems"], row["samples_per_problem"] = len(s["ids"]), K
    summary[lv] = row
  if rl_on:
    summary["rl"] = _rl_stage(config, workdir, sft_dir, probs, tests, tok,
                              verifier_reward(v_graphdef, v_params, tok, max_len,
                                              log_path=stages / "rl_verifier_rewards.jsonl"))
  summary["wall_s"] = time.perf_counter() - t0
  finish(workdir, summary)
  return summary


def _rl_stage(config, workdir: Path, sft_dir: str, probs, tests, tok, reward_fn) -> dict[str, Any]:
  """GRPO with the verifier's reward (and the gold-reward control); pass@1 on the test sets before/after."""
  K = int(config.sampling.samples)
  out: dict[str, Any] = {"iterations": int(config.rl.total_steps),
                         "pass@1_before": {lv: _pass1(tests[lv]) for lv in LEVELS}}
  arms = ["verifier"] + (["gold"] if config.rl.gold_control else [])
  for arm in arms:
    cfg = rl_config(config, arm, sft_dir)
    res = train_rl(cfg, workdir / f"rl_{arm}", reward_fn=reward_fn if arm == "verifier" else None)
    after = _policy_rung(cfg, res["state"].params, f"rl_{arm}", workdir / f"rl_{arm}")
    samples = {lv: memo(workdir / "stages" / f"rl_{arm}_test_{lv}_samples.json",
                        lambda lv=lv, m=after: _samples(m, probs[f"test_{lv}"], K, config,
                                                        int(config.seed) + 2, tok)) for lv in LEVELS}
    lines = (workdir / f"rl_{arm}" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records = [r for r in records if "reward_mean" in r]
    out[f"pass@1_after_{arm}_reward"] = {lv: _pass1(samples[lv]) for lv in LEVELS}
    out[f"{arm}_arm_train"] = {k: [r[k] for r in records] for k in ("reward_mean", "train_accuracy")}
  return out
