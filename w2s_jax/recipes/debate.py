"""Debate-assisted weak supervision (Lang et al. 2025, "Debate Helps Weak-to-Strong Generalization").

The pipeline, on the W2S verification records of `w2s_jax.data.w2s_sets` ("Q: <problem> A: <candidate>",
is the candidate right?):

1. **Debate.** The strong model (the *debater*) writes one short argument for each side of every item,
   continuing "The proposed answer is correct because" / "... wrong because". Transcripts are cached in
   `WORKDIR/transcripts.jsonl` (one line per item and generation setting), so a rerun skips generation.
2. **Weak supervisors.** Each seed splits the training set 50/50 (A, B) as `protocol.split_halves`. An
   ensemble of k weak models (seeds `seed*1000 + j`) is trained on A with ground truth, twice: once on
   the plain item (*plain* arm) and once on item + both arguments (*debate* arm: the transcript is
   context, the label is still ground truth). Each ensemble's averaged soft predictions on B are its labels.
3. **Strong students.** The strong model is trained on B with each arm's labels (plain inputs: the student
   never sees the debate) and on A with ground truth (its ceiling).
4. **PGR.** `pgr = (transfer - weak) / (ceiling - weak)` with `weak` the plain weak model's test accuracy
   (member 0), the same baseline for both arms, so the arms differ only in their transfer accuracy.
   `pgr_own` uses the debate weak model's own test accuracy (on test items with their transcripts).

Debate text layout (the item last, so that the plain and debate inputs end with the same bytes and
left-truncation can only cut arguments): "For: <argument for>\nAgainst: <argument against>\n<item>".
Each argument is cut to `debate.max_arg_chars` characters and the item to the bytes the plain arm reads.

Legend: N items, C classes (2), K ensemble members, B batch, P prompt length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from w2s_jax.config_files import start_workdir
from w2s_jax.data import w2s_sets
from w2s_jax.evals.metrics import accuracy
from w2s_jax.pipeline_shell import finish
from w2s_jax.sampling.sampler import Sampler, SamplingConfig, left_pad
from w2s_jax.train.pretrain import Rung
from w2s_jax.w2s import classify, protocol
from w2s_jax.w2s import rungs as rung_lib
from w2s_jax.w2s.metrics import pgr, summary_ci
from w2s_jax.w2s.rungs import load_rungs, tokenizer_of

SIDES = ("correct", "wrong")


# ------------------------------------------------------------------------------------------------
# Pure parts.
# ------------------------------------------------------------------------------------------------


def ensemble_soft_labels(probs_KNC: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
  """The ensemble's soft labels: the mean of K members' class probabilities.

  Args:
    probs_KNC: K arrays [N, C] of class probabilities (rows sum to 1).

  Returns:
    float32 [N, C] mean over members (rows still sum to 1).

  Raises:
    ValueError: for no members, members of different shapes, or rows that are not distributions.
  """
  if len(probs_KNC) == 0:
    raise ValueError("ensemble_soft_labels: the ensemble has no members (ensemble must be >= 1)")
  shapes = {np.shape(p) for p in probs_KNC}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"ensemble_soft_labels: members must all be [N, C]; got shapes {sorted(shapes)}")
  probs = np.asarray(probs_KNC, np.float64)
  if np.any(probs < 0) or not np.allclose(probs.sum(-1), 1.0, atol=1e-4):
    raise ValueError("ensemble_soft_labels: every row must be a probability distribution")
  return probs.mean(0).astype(np.float32)


def debater_prompt(record: dict[str, Any], side: str, tokenizer: Any) -> str:
  """The prompt that makes the debater argue `side` ("correct" or "wrong") of one item.

  Chat models (a tokenizer with a chat template) get a user turn and the assistant's answer is started
  for them; plain decoders continue "<item>\\nThe proposed answer is <side> because".
  """
  if side not in SIDES:
    raise ValueError(f"debate side {side!r}: choose one of {SIDES}")
  opener = f"The proposed answer is {side} because"
  if getattr(tokenizer, "chat_template", None):
    ask = (f"Question: {record['question']}\nProposed answer: {record['candidate']}\n"
           f"In one sentence, argue that the proposed answer is {side}.")
    return tokenizer.apply_chat_template([{"role": "user", "content": ask}]) + opener
  return f"{record['txt']}\n{opener}"


def debate_text(item_txt: str, arg_for: str, arg_against: str, *, item_chars: int, max_arg_chars: int) -> str:
  """The weak model's debate-arm input: both arguments, then the item's last `item_chars` characters."""
  clean = [" ".join(a.split())[:max_arg_chars] for a in (arg_for, arg_against)]
  return f"For: {clean[0]}\nAgainst: {clean[1]}\n{item_txt[-item_chars:]}"


# ------------------------------------------------------------------------------------------------
# Records.
# ------------------------------------------------------------------------------------------------


def take_records(records: Sequence[dict[str, Any]], idx: np.ndarray) -> list[dict[str, Any]]:
  return [records[int(i)] for i in idx]


# ------------------------------------------------------------------------------------------------
# Transcripts.
# ------------------------------------------------------------------------------------------------


def generate_arguments(rung: Rung, prompts: Sequence[str], *, max_new_tokens: int, temperature: float,
                       batch_size: int, seed: int) -> Iterator[list[str]]:
  """Samples one continuation per prompt from `rung`'s decoder with the library sampler; yields them
  batch by batch (in prompt order) so that callers can save progress.

  Prompts are left-padded to one length (one compilation); plain decoders get BOS first and stop at a
  newline, chat models stop at their end-of-turn token. Prompts longer than the model's window minus
  `max_new_tokens` are cut from the left.
  """
  tok = tokenizer_of(rung)
  chat = bool(getattr(tok, "chat_template", None))
  stops = (tok.eos_id,) if chat else (tok.eos_id, *tok.encode("\n"))
  room = rung.model_cfg.max_seq_len - max_new_tokens
  ids = [([] if chat else [tok.bos_id]) + tok.encode(p) for p in prompts]
  ids = [s[-room:] for s in ids]
  length = max(len(s) for s in ids)
  cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                       top_p=0.95 if temperature else None, stop_ids=tuple(stops), pad_id=tok.pad_id)
  sampler = Sampler(rung.graphdef, cfg)
  vocab = getattr(tok, "vocab_size", rung.model_cfg.vocab_size)
  for start in range(0, len(ids), batch_size):
    chunk = ids[start:start + batch_size]
    n = len(chunk)
    chunk = chunk + [chunk[-1]] * (batch_size - n)  # one compiled batch shape
    prompts_BP, mask_BP = left_pad(chunk, tok.pad_id, length)
    res = sampler(rung.params, prompts_BP, mask_BP, jax.random.fold_in(jax.random.key(seed), start))
    out = []
    for row in np.asarray(res.completions_BN)[:n]:
      # a model's vocabulary may be padded past the tokenizer's (ladder: 512 > 259 bytes): drop those ids
      kept = [int(t) for t in row if int(t) not in stops and int(t) != tok.pad_id and int(t) < vocab]
      out.append(tok.decode(kept).strip())
    yield out


def load_transcripts(path: Path, setting: dict[str, Any]) -> dict[str, dict[str, str]]:
  """Cached transcripts of `path` made with exactly `setting`: record id -> {"for", "against"}."""
  found: dict[str, dict[str, str]] = {}
  if not path.exists():
    return found
  for i, line in enumerate(path.read_text().splitlines()):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{i + 1}: not JSON ({e}); delete the line or the file to regenerate") from e
    if row.get("setting") == setting:
      found[row["id"]] = {"for": row["for"], "against": row["against"]}
  return found


def ensure_transcripts(records: Sequence[dict[str, Any]], debater: Rung, setting: dict[str, Any],
                       path: Path) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
  """Transcripts of every record: cached ones are read, the others generated and appended to `path`."""
  if setting["batch_size"] % 2:
    raise ValueError(f"debate.batch_size must be even (both sides of an item in one batch); "
                     f"got {setting['batch_size']}")
  cached = load_transcripts(path, setting)
  todo = [r for r in records if r["id"] not in cached]
  stats = {"cached": len(records) - len(todo), "generated": len(todo), "generation_s": 0.0}
  if todo:
    tok = tokenizer_of(debater)
    prompts = [debater_prompt(r, side, tok) for r in todo for side in SIDES]
    start, done = time.perf_counter(), 0
    batches = generate_arguments(debater, prompts, max_new_tokens=setting["max_new_tokens"],
                                 temperature=setting["temperature"], batch_size=setting["batch_size"],
                                 seed=setting["seed"])
    with path.open("a") as f:
      for args in batches:  # appended batch by batch: an interrupted run keeps what it generated
        for j in range(0, len(args), 2):
          r = todo[done + j // 2]
          # the generated continuations only: the side is implied by "For:"/"Against:" in `debate_text`
          row = {"id": r["id"], "setting": setting, "for": args[j], "against": args[j + 1]}
          cached[r["id"]] = {"for": row["for"], "against": row["against"]}
          f.write(json.dumps(row) + "\n")
        f.flush()
        done += len(args) // 2
    stats["generation_s"] = time.perf_counter() - start
  return cached, stats


# ------------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------------


def _weak_ensemble(sweep: protocol.Sweep, rung: Rung, tag: str, half_a: classify.Encoded,
                   half_b: classify.Encoded, seed: int, k: int) -> tuple[np.ndarray, dict[str, Any]]:
  probs, first = [], {}
  for j in range(k):
    p_b, res = sweep.fit(f"seed{seed}/{tag}-gt-{rung.preset}-m{j}", rung, half_a, "xent", seed * 1000 + j,
                         other=half_b)
    probs.append(p_b)
    first = first or res
  return ensemble_soft_labels(probs), first


def run_debate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) the debate-vs-plain weak supervision comparison; writes results.json."""
  workdir = start_workdir(config, workdir)
  d, dc = config.data, config.debate
  if config.ensemble < 1:
    raise ValueError(f"ensemble must be >= 1; got {config.ensemble}")
  names = [config.weak, config.strong] + ([dc.debater] if dc.debater not in ("strong", config.strong) else [])
  rungs = load_rungs(names, config)
  weak, strong = (rungs[rung_lib.rung_label(n)] for n in (config.weak, config.strong))
  debater = strong if dc.debater == "strong" else rungs[rung_lib.rung_label(dc.debater)]
  train_records, test_records = w2s_sets.generate_splits(d.task, d.train_size, d.eval_size, seed=d.seed)

  setting = {"debater": debater.source or debater.preset, "max_new_tokens": int(dc.max_new_tokens),
             "temperature": float(dc.temperature), "seed": int(dc.seed), "batch_size": int(dc.batch_size),
             "task": d.task}
  transcripts, gen = ensure_transcripts(train_records + test_records, debater, setting,
                                        workdir / "transcripts.jsonl")
  item_chars = d.max_len - 1  # the bytes (after BOS) the plain arm reads
  debate_len = item_chars + 2 * dc.max_arg_chars + len("For: \nAgainst: \n") + 1

  def with_debate(records):
    return [dict(r, txt=debate_text(r["txt"], transcripts[r["id"]]["for"], transcripts[r["id"]]["against"],
                                    item_chars=item_chars, max_arg_chars=dc.max_arg_chars)) for r in records]

  wtok, stok = tokenizer_of(weak), tokenizer_of(strong)
  plain_w = (classify.encode(train_records, wtok, d.max_len), classify.encode(test_records, wtok, d.max_len))
  debate_w = (classify.encode(with_debate(train_records), wtok, debate_len),
              classify.encode(with_debate(test_records), wtok, debate_len))
  plain_s = (classify.encode(train_records, stok, d.max_len), classify.encode(test_records, stok, d.max_len))
  sweeps = {
    "plain": protocol.Sweep([weak], *plain_w, protocol.sweep_spec(config), workdir),
    "debate": protocol.Sweep([weak], *debate_w, protocol.sweep_spec(config), workdir),
    "strong": protocol.Sweep([strong], *plain_s, protocol.sweep_spec(config), workdir),
  }
  per_seed = []
  for seed in config.seeds:
    a_idx, b_idx = protocol.split_halves(len(train_records), seed)
    hard_b = plain_w[0].hard_N[b_idx]
    s_train = plain_s[0]
    _, ceiling = sweeps["strong"].fit(f"seed{seed}/gt-{strong.preset}", strong, s_train.take(a_idx), "xent",
                                      seed)
    row: dict[str, Any] = {"seed": seed, "strong_ceiling": ceiling["accuracy"], "arms": {}}
    for arm in ("plain", "debate"):
      tr = (plain_w if arm == "plain" else debate_w)[0]
      labels, weak_res = _weak_ensemble(sweeps[arm], weak, arm, tr.take(a_idx), tr.take(b_idx), seed,
                                        config.ensemble)
      _, res = sweeps["strong"].fit(f"seed{seed}/w2s-{arm}-{weak.preset}-to-{strong.preset}", strong,
                                    s_train.take(b_idx).with_targets(labels), config.loss, seed)
      row["arms"][arm] = {"weak_acc": weak_res["accuracy"], "weak_label_acc": accuracy(labels, hard_b),
                          "transfer_acc": res["accuracy"]}
    base = row["arms"]["plain"]["weak_acc"]
    for r in row["arms"].values():
      r["pgr"] = pgr(base, ceiling["accuracy"], r["transfer_acc"])
      r["pgr_own"] = pgr(r["weak_acc"], ceiling["accuracy"], r["transfer_acc"])
    per_seed.append(row)

  summary = {arm: {key: summary_ci([s["arms"][arm][key] for s in per_seed])
                   for key in ("weak_acc", "weak_label_acc", "transfer_acc", "pgr", "pgr_own")}
             for arm in ("plain", "debate")}
  summary["strong_ceiling"] = summary_ci([s["strong_ceiling"] for s in per_seed])
  example = train_records[0]
  results = {
    "task": d.task, "weak": weak.preset, "strong": strong.preset, "debater": setting["debater"],
    "ensemble": config.ensemble, "loss": config.loss, "seeds": list(config.seeds),
    "data": {"train": len(train_records), "test": len(test_records), "debate_max_len": debate_len,
             "truncated_debate": debate_w[0].truncated + debate_w[1].truncated},
    "transcripts": {**gen, "file": str(workdir / "transcripts.jsonl"),
                    "example": {"item": example["txt"], **transcripts[example["id"]]}},
    "summary": summary, "per_seed": per_seed,
  }
  return {**finish(workdir, results, table=results_table(results)),
          "transcripts": {k: gen[k] for k in ("cached", "generated")},
          "generation_s": round(gen["generation_s"], 1)}


def results_table(results: dict[str, Any]) -> str:
  """Markdown: one row per arm with the weak supervisor, its labels, the transfer and PGR (95 % CIs)."""
  def f(d: dict[str, Any], pct: bool = True) -> str:
    if d["median"] is None:
      return "n/a"
    g = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.2f}")
    return f"{g(d['median'])} [{g(d['low'])}, {g(d['high'])}]" if d["n"] > 1 else g(d["median"])

  s = results["summary"]
  lines = ["| supervision | weak test acc % | weak label acc (B) % | strong ceiling % | transfer % | PGR "
           "| PGR own |", "|---|---|---|---|---|---|---|"]
  for arm in ("plain", "debate"):
    a = s[arm]
    lines.append(f"| {arm} ({results['weak']} x{results['ensemble']} -> {results['strong']}) | "
                 f"{f(a['weak_acc'])} | {f(a['weak_label_acc'])} | {f(s['strong_ceiling'])} | "
                 f"{f(a['transfer_acc'])} | {f(a['pgr'], False)} | {f(a['pgr_own'], False)} |")
  return "\n".join(lines)
