"""Reasoning solutions as training data: SFT on (prompt, solution) pairs and sampling solutions.

Shared by the reasoning recipes (`w2s_reasoning`, `easy_to_hard`): `solution_pairs` (gold worked
solutions), `sft_on_pairs` (a resumable SFT run through the `sft` task's `jsonl` corpus),
`sample_solutions` (n scored samples per problem) and `rollout_matrices` (their problem-major
[P, K] views). Legend: P problems, K samples per problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_prompt
from w2s_jax.rl.evaluate import sample_eval
from w2s_jax.rl.rollout import Rollout, encode_prompts
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import train
from w2s_jax.train.preference_tasks import start_params
from w2s_jax.train.pretrain import Rung
from w2s_jax.train.tasks import sft_setup

Pairs = list[tuple[str, str]]


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
  os.replace(tmp, path)


def sft_on_pairs(
  name: str, model: ml_collections.ConfigDict, pairs: Pairs, eval_pairs: Pairs, workdir: Path, *,
  steps: int, batch_size: int, optimizer: Mapping[str, Any], seq_len: int, seed: int,
  tokenizer: str = "bytes", init: Rung | None = None,
) -> Rung:
  """SFT of `model` (`preset`, `vocab_size`, `overrides`) on (prompt, response) pairs: a resumable run.

  `optimizer` is the run's `optimizer` section from the pipeline's config (e.g. `stage1.optimizer`).

  The pairs are written to `workdir/data/{train,eval}.jsonl` and trained through the `sft` task's
  `jsonl` corpus and the one SFT loop (a finished run is just reloaded). `init` starts from a model's
  params instead of a fresh initialisation.

  Returns:
    the trained model as a `Rung` (its `eval_loss` is the held-out loss on `eval_pairs`, NaN if none).
  """
  if not pairs:
    raise ValueError(f"{name}: no training pairs (the selection kept nothing); loosen it or add data")
  workdir = Path(workdir)
  data = workdir / "data"
  to_records = lambda ps: [{"id": f"{name}-{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ps)]
  _write_jsonl(data / "train.jsonl", to_records(pairs))
  _write_jsonl(data / "eval.jsonl", to_records(eval_pairs or pairs[:batch_size]))
  c = train_defaults(total_steps=steps, batch_size=batch_size, optimizer=optimizer, seed=seed)
  c.task = "sft"
  c.log_every_steps = max(steps // 10, 1)
  c.eval_every_steps = steps
  c.checkpoint_every_steps = steps
  c.model = ml_collections.ConfigDict(model.to_dict())
  c.data = ml_collections.ConfigDict(dict(
    corpus="jsonl", tokenizer=tokenizer, seq_len=seq_len, overlong="drop",
    train_files=str(data / "train.jsonl"), eval_files=str(data / "eval.jsonl"), eval_batches=2))
  c.loss = ml_collections.ConfigDict(dict(name="sft", reduction="token-mean", z_loss=0.0,
                                               label_smoothing=0.0))
  setup = sft_setup(c)
  if init is not None:
    setup.init_params = start_params(setup.make_model, init.params, seed)
  summary = train(c, workdir, setup)
  model_ = nnx.eval_shape(lambda: setup.make_model(nnx.Rngs(0)))
  eval_loss = float((summary.get("eval") or {}).get("eval_loss", float("nan")))
  return Rung(name, model_.cfg, nnx.split(model_)[0], summary["state"].params, eval_loss, workdir)


def sample_solutions(
  policy: Rung, problems: Sequence[reasoning.Problem], *, n: int, temperature: float, max_new_tokens: int,
  prompt_len: int, seed: int, tokenizer: Any, chunk_rows: int = 64,
) -> Rollout:
  """n solutions of every problem (`temperature` 0 = greedy), scored by the task's scorer.

  Rows are problem-major (row i·n + j is sample j of the i-th kept problem); problems whose prompt does
  not fit in `prompt_len` tokens are left out (the rollout's `problems` lists those kept).
  """
  prompts = encode_prompts(problems, tokenizer, prompt_len)
  sampler = Sampler(policy.graphdef, SamplingConfig(
    max_new_tokens=max_new_tokens, temperature=temperature, stop_ids=(tokenizer.eos_id,),
    pad_id=tokenizer.pad_id))
  return sample_eval(sampler, policy.params, prompts, n, jax.random.key(seed), tokenizer,
                     chunk_prompts=max(chunk_rows // n, 1))


def rollout_matrices(rollout: Rollout, n: int) -> tuple[np.ndarray, list[list[str | None]], list[list[str]]]:
  """(correct_PK, answers_PK, texts_PK) of a problem-major rollout with K = n samples per problem."""
  P = len(rollout.problems)
  answers = [rollout.answers[i * n:(i + 1) * n] for i in range(P)]
  texts = [rollout.texts[i * n:(i + 1) * n] for i in range(P)]
  return rollout.correct_R.reshape(P, n), answers, texts




def solution_pairs(problems: Sequence[reasoning.Problem]) -> Pairs:
  """(prompt, gold worked solution) of each problem."""
  return [(reasoning_prompt(p), p.solution) for p in problems]
