"""Learned reward terms read from earlier runs' folders: a reward model, a PRM, PAV progress, implicit PRM.

Each scorer loads its run once (the folder's `config.json` and the newest intact step of its
`checkpoints/`, through `w2s_jax.checkpoint`) and then scores RL completions as the model was trained
to see them: `[BOS] + reasoning_prompt(problem) + completion` (the stop token appended where the row
stopped, as in the PRM's labelled solutions), tokenized with the run's own tokenizer.

- `RewardModelScorer`: a reward-model run (`reward_model_tiny`); its scalar score (`sequence_scores`).
- `PRMScorer.prm`: a PRM run (`prm_tiny`: the pipeline's WORKDIR, the PRM in WORKDIR/prm);
  `prm_solution_scores` of its step probabilities σ(logit at each step end).
- `PRMScorer.pav`: the same PRM as the prover's Q^μ; Σ_h `pav_progress` = Q^μ(last step end) − Q^μ(prompt).
- `ImplicitPRMScorer`: a DPO-family run (`dpo_tiny`, ...); Σ_k `implicit_prm_step_rewards` ("single").

The RL loop takes one reward per completion, so the process rewards (PAV, implicit PRM) enter as their
sum over the completion's steps (PAV's J_outcome + α Σ_h A^μ with the outcome in the `correct` term;
the implicit PRM's sum is β log π_θ(y)/π_ref(y), its outcome reward). Per-step credit (token-level
rewards in the advantages) is not wired.

Legend: R completions, L row tokens, S steps, T = S + 1 step boundaries, N completion tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.advantages.process import (
  SOLUTION_REDUCTIONS,
  implicit_prm_step_rewards,
  pav_progress,
  prm_solution_scores,
)
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.data import reasoning
from w2s_jax.data.sft_sources import reasoning_prompt
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.models.heads import SequenceClassifier, ValueModel
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.prm.data import step_scores
from w2s_jax.prm.labels import step_end_indices
from w2s_jax.rewards.compose import RewardConfig
from w2s_jax.rl.objective import completion_logprobs_jit
from w2s_jax.sampling.sampler import left_pad
from w2s_jax.train.optim import make_optimizer
from w2s_jax.train.preference_objectives import PAIRWISE_INPUTS, sequence_scores
from w2s_jax.train.preference_tasks import start_model
from w2s_jax.train.state import create_train_state
from w2s_jax.train.tasks import make_tokenizer

Scorer = Callable[[Sequence[reasoning.Problem], Sequence[str], np.ndarray], np.ndarray]
BUCKET = 64  # row lengths are rounded up to a multiple of this (few compiled shapes)


def run_config(workdir: str | Path, key: str) -> ml_collections.ConfigDict:
  """The `config.json` of a finished run in `workdir`; a clear error naming `key` when there is none."""
  path = Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{key}={str(workdir)!r}: no run there ({path} is missing)")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_params(
  workdir: str | Path, config: ml_collections.ConfigDict, make_model: Callable[[nnx.Rngs], nnx.Module],
  key: str,
) -> Any:
  """The trained params of a `train.loop.train` run: the newest intact step of `workdir/checkpoints`.

  The train state is rebuilt from the run's own config (`optimizer`, `total_steps`, `seed`) so the
  checkpoint's tree matches; params land on the first device.

  Raises:
    FileNotFoundError: no complete checkpoint (message names `key` and the folder).
    ValueError: the checkpoint does not fit the model the run's config describes (names `key`).
  """
  folder = Path(workdir) / "checkpoints"
  if not folder.is_dir():
    raise FileNotFoundError(f"{key}={str(workdir)!r}: no checkpoints/ folder (not a finished run)")
  tx = make_optimizer(config.optimizer, int(config.total_steps))
  seed = int(config.get("seed", 0))
  abstract = jax.eval_shape(lambda: create_train_state(nnx.split(make_model(nnx.Rngs(seed)))[1], tx, seed))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  with Checkpointer(folder, read_only=True) as ckpt:
    try:
      state, _, _ = ckpt.restore(abstract)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{key}={str(workdir)!r}: {e}") from None
    except ValueError as e:
      raise ValueError(f"{key}={str(workdir)!r}: the checkpoint does not fit the model of its config.json "
                       f"({e})") from None
  return state.params


def _one_device() -> Any:
  """The first device as the mesh in force: the scorers' params live there, whatever mesh the caller (the
  RL loop) runs under."""
  return jax.set_mesh(shd.make_mesh({"data": 1}))


def _graphdef(make_model: Callable[[nnx.Rngs], nnx.Module]) -> nnx.GraphDef:
  return nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(0))))[0]


def _bucket(n: int, limit: int, key: str, what: str) -> int:
  if n > limit:
    raise ValueError(f"{key}: a {what} has {n} tokens, more than the model's max_seq_len={limit}")
  return min(limit, BUCKET * math.ceil(n / BUCKET))


def _token_rows(
  problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str], stopped_R: np.ndarray | None,
  tokenizer: Tokenizer,
) -> tuple[list[list[int]], list[list[int]]]:
  """(prompt ids `[BOS] + reasoning_prompt`, completion ids [+ EOS where the row stopped]) of each row."""
  prompts = [[tokenizer.bos_id, *tokenizer.encode(reasoning_prompt(p))] for p in problems_R]
  completions = [tokenizer.encode(t) for t in texts_R]
  if stopped_R is not None:
    completions = [c + [tokenizer.eos_id] if s else c for c, s in zip(completions, stopped_R, strict=True)]
  return prompts, completions


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _sequence_scores_jit(graphdef: nnx.GraphDef, params: Any, rows: dict[str, jax.Array]) -> jax.Array:
  return sequence_scores(nnx.merge(graphdef, params), rows)


class RewardModelScorer:
  """The scalar score of a reward-model run (`configs/reward_model_tiny.py`) for each completion.

  Rows are those of the preference task (`preference_tasks.encode_rows`): `[BOS] + prompt + completion`,
  read at the completion's last token; the stop token is not part of them.
  """

  def __init__(self, workdir: str | Path, key: str = "reward.model_workdir"):
    cfg = run_config(workdir, key)
    objective = cfg.get("loss", {}).get("name")
    if cfg.get("task") != "preference" or objective != "reward_model":
      raise ValueError(f"{key}={str(workdir)!r} is a {cfg.get('task')!r} run with objective {objective!r}, "
                       "not a reward model (train one with configs/reward_model_tiny.py)")

    self.key, self.model_cfg = key, from_section(cfg.model)
    head = cfg.model.get("head", "classifier")
    make_model = ((lambda rngs: SequenceClassifier(self.model_cfg, 1, rngs=rngs)) if head == "classifier"
                  else (lambda rngs: ValueModel(self.model_cfg, rngs=rngs)))
    self.graphdef, self.params = _graphdef(make_model), restore_params(workdir, cfg, make_model, key)
    self.tokenizer = make_tokenizer(cfg.data.tokenizer)

  def __call__(self, problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str],
               stopped_R: np.ndarray | None = None) -> np.ndarray:
    """Scores float32 [R] (`stopped_R` is not used: the reward model's rows end before the stop token)."""
    prompts, completions = _token_rows(problems_R, texts_R, None, self.tokenizer)
    ids = [p + c for p, c in zip(prompts, completions, strict=True)]
    L = _bucket(max(map(len, ids)), self.model_cfg.max_seq_len, self.key, "prompt + completion")
    rows = {k: np.zeros((len(ids), L), np.int32) for k in ("inputs", "positions", "segment_ids")}
    for r, row in enumerate(ids):
      rows["inputs"][r, :len(row)], rows["positions"][r, :len(row)] = row, np.arange(len(row))
      rows["segment_ids"][r, :len(row)] = 1
    with _one_device():
      return np.asarray(_sequence_scores_jit(self.graphdef, self.params, rows), np.float32)


class PRMScorer:
  """A PRM run's (`configs/prm_tiny.py`) step probabilities, as a solution score or as PAV progress.

  `workdir` is the pipeline's folder: its `config.json` gives the tokenizer, model and step boundary
  (`label.boundary`), its `prm/` the trained `ValueModel`.
  """

  def __init__(self, workdir: str | Path, key: str = "reward.prm_workdir"):
    cfg = run_config(workdir, key)
    if cfg.get("task") != "prm_pipeline":
      raise ValueError(f"{key}={str(workdir)!r} is a {cfg.get('task')!r} run, not a PRM (train one with "
                       "configs/prm_tiny.py)")

    self.key, self.model_cfg = key, from_section(cfg.model)
    make_model = lambda rngs: ValueModel(self.model_cfg, rngs=rngs)
    prm_dir = Path(workdir) / "prm"
    self.graphdef = _graphdef(make_model)
    self.params = restore_params(prm_dir, run_config(prm_dir, key), make_model, key)
    self.tokenizer = make_tokenizer(cfg.data.tokenizer)
    self.boundary_ids = tuple(self.tokenizer.encode(cfg.label.boundary))

  def values(self, problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str],
             stopped_R: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The PRM's probability at every step boundary: before step 0 (the prompt's last token), then at the
    last token of each step.

    Returns:
      (values_RT float32 [R, S+1], step_mask_RS bool [R, S]); values past a row's last step are 0.
    """
    prompts, completions = _token_rows(problems_R, texts_R, stopped_R, self.tokenizer)
    ends = [step_end_indices(c, self.boundary_ids) if c else np.zeros(0, np.int32) for c in completions]
    R, S = len(prompts), max(1, max(map(len, ends)))
    L = _bucket(max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True)),
                self.model_cfg.max_seq_len, self.key, "prompt + completion")
    rows = {"tokens": np.zeros((R, L), np.int32), "segment_ids": np.zeros((R, L), np.int32),
            "step_pos_RS": np.full((R, S + 1), -1, np.int32)}
    step_mask_RS = np.zeros((R, S), bool)
    for r, (p, c, e) in enumerate(zip(prompts, completions, ends, strict=True)):
      rows["tokens"][r, :len(p) + len(c)] = p + c
      rows["segment_ids"][r, :len(p) + len(c)] = 1
      rows["step_pos_RS"][r, :len(e) + 1] = [len(p) - 1, *(len(p) + e)]
      step_mask_RS[r, :len(e)] = True
    with _one_device():
      return step_scores(self.graphdef, self.params, rows, chunk=R), step_mask_RS

  def prm(self, reduce: str) -> Scorer:
    """Scorer: `prm_solution_scores` (min / last / prod / mean) of the step probabilities, float32 [R]."""
    if reduce not in SOLUTION_REDUCTIONS:
      raise ValueError(f"reward.prm_reduce must be one of {SOLUTION_REDUCTIONS}, got {reduce!r}")

    def score(problems_R, texts_R, stopped_R):
      values_RT, mask_RS = self.values(problems_R, texts_R, stopped_R)
      return np.asarray(prm_solution_scores(values_RT[:, 1:], mask_RS, reduce=reduce), np.float32)

    return score

  def pav(self, problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str],
          stopped_R: np.ndarray | None) -> np.ndarray:
    """Σ over steps of PAV progress Q^μ(s_{h+1}) − Q^μ(s_h), with Q^μ the PRM's probabilities, f32 [R]."""
    values_RT, mask_RS = self.values(problems_R, texts_R, stopped_R)
    return np.asarray(pav_progress(values_RT, mask_RS).sum(-1), np.float32)


class ImplicitPRMScorer:
  """Implicit-PRM process rewards of a DPO-family run: r_k from β log π_θ/π_ref, summed over steps.

  π_θ is the run's trained policy (its checkpoint), π_ref its start model (`preference_tasks.start_model`:
  the preset at `seed`, or the cached SFT model), β the run's `loss.beta` unless `beta` > 0; steps
  end at `boundary` (the step rule of `prm.labels.step_end_indices`).
  """

  def __init__(self, workdir: str | Path, *, beta: float = 0.0, boundary: str = "\n",
               key: str = "reward.process_workdir"):
    cfg = run_config(workdir, key)
    objective = cfg.get("loss", {}).get("name")
    if cfg.get("task") != "preference" or objective not in PAIRWISE_INPUTS or objective in ("simpo", "orpo"):
      raise ValueError(f"{key}={str(workdir)!r} is a {cfg.get('task')!r} run with objective {objective!r}: "
                       "an implicit PRM needs a reference-based preference run (e.g. configs/dpo_tiny.py)")

    self.key = key
    self.model_cfg, self.graphdef, self.ref_params = start_model(cfg)
    self.params = restore_params(workdir, cfg, lambda rngs: Transformer(self.model_cfg, rngs=rngs), key)
    self.beta = float(beta) or float(cfg.loss.get("beta", 0.1))
    self.tokenizer = make_tokenizer(cfg.data.tokenizer)
    self.boundary_ids = tuple(self.tokenizer.encode(boundary))

  def log_ratios(self, problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str],
                 stopped_R: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(log π_θ − log π_ref of each completion token [R, N], its mask [R, N], each row's step ends)."""

    prompts, completions = _token_rows(problems_R, texts_R, stopped_R, self.tokenizer)
    P = max(map(len, prompts))
    N = _bucket(max(1, max(map(len, completions))), self.model_cfg.max_seq_len - P, self.key, "completion")
    p_tokens, p_mask = left_pad(prompts, pad_id=self.tokenizer.pad_id, length=P)
    c_tokens = np.full((len(prompts), N), self.tokenizer.pad_id, np.int32)
    c_mask = np.zeros((len(prompts), N), bool)
    for r, c in enumerate(completions):
      c_tokens[r, :len(c)], c_mask[r, :len(c)] = c, True
    tokens, mask = np.concatenate([p_tokens, c_tokens], 1), np.concatenate([p_mask, c_mask], 1)
    with _one_device():
      logp = [np.asarray(completion_logprobs_jit(self.graphdef, p, tokens, mask, num_new=N, temperature=1.0))
              for p in (self.params, self.ref_params)]
    ends = [step_end_indices(c, self.boundary_ids) if c else np.zeros(0, np.int32) for c in completions]
    return (logp[0] - logp[1]) * c_mask, c_mask, ends

  def __call__(self, problems_R: Sequence[reasoning.Problem], texts_R: Sequence[str],
               stopped_R: np.ndarray | None) -> np.ndarray:
    """Σ_k implicit-PRM step reward (mode "single") of each completion, float32 [R]."""
    ratio_RN, mask_RN, ends = self.log_ratios(problems_R, texts_R, stopped_R)
    S = max(1, max(map(len, ends)))
    ends_RS = np.zeros((len(ends), S), np.int32)
    step_mask_RS = np.zeros((len(ends), S), bool)
    for r, e in enumerate(ends):
      ends_RS[r, :len(e)], step_mask_RS[r, :len(e)] = e, True
    rewards_RS = implicit_prm_step_rewards(ratio_RN, mask_RN, ends_RS, beta=self.beta,
                                           step_mask_S=step_mask_RS)
    return np.asarray(rewards_RS.sum(-1), np.float32)


def learned_scorers(cfg: Any) -> dict[str, Scorer]:
  """The learned terms a `RewardConfig` asks for, by term name, each loaded once.

  `model` (reward.model_workdir), `prm` (reward.prm_workdir, reduced by reward.prm_reduce) and the process
  term named by reward.process: `pav` (the PRM of reward.process_workdir as the prover's Q^μ) or
  `implicit_prm` (the DPO run of reward.process_workdir, β = reward.implicit_prm_beta or the run's).
  """
  out: dict[str, Scorer] = {}
  prms: dict[str, PRMScorer] = {}  # one load when the PRM and PAV terms read the same run

  def _prm(workdir: str, key: str) -> PRMScorer:
    if str(workdir) not in prms:
      prms[str(workdir)] = PRMScorer(workdir, key)
    return prms[str(workdir)]

  if cfg.model_workdir and cfg.model_coef:  # a term with weight 0 is not loaded (as the others: off)
    out["model"] = RewardModelScorer(cfg.model_workdir)
  if cfg.prm_workdir and cfg.prm_coef:
    out["prm"] = _prm(str(cfg.prm_workdir), "reward.prm_workdir").prm(cfg.prm_reduce)
  if cfg.process not in ("", "pav", "implicit_prm"):
    raise ValueError(f"reward.process must be '', 'pav' or 'implicit_prm', got {cfg.process!r}")
  if cfg.process and not cfg.process_workdir:
    raise ValueError(f"reward.process={cfg.process!r} needs reward.process_workdir (a PRM run for 'pav', a "
                     "DPO-family run for 'implicit_prm')")
  if not cfg.process_coef:
    return out
  if cfg.process == "pav":
    out["pav"] = _prm(str(cfg.process_workdir), "reward.process_workdir").pav
  elif cfg.process == "implicit_prm":
    out["implicit_prm"] = ImplicitPRMScorer(cfg.process_workdir, beta=cfg.implicit_prm_beta,
                                            boundary=cfg.process_boundary)
  return out


def make_reward_config(section: Mapping[str, Any], learned: Callable[..., np.ndarray] | None = None
                       ) -> RewardConfig:
  """The `RewardConfig` of a config's `reward` section, with the learned terms it names loaded.

  Args:
    section: the `reward` section (a ConfigDict or dict of `RewardConfig` fields).
    learned: the in-code learned reward (`train_rl(reward_fn=...)`), or None.

  Raises:
    ValueError: an unknown key (named as `reward.<key>`), or a folder term whose run cannot be used.
    FileNotFoundError: a folder term's run or checkpoint is missing (names the key and folder).
  """
  values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  fields = {f.name for f in dataclasses.fields(RewardConfig)} - {"learned", "scorers"}
  if unknown := sorted(set(values) - fields):
    raise ValueError(f"unknown key reward.{unknown[0]}; the reward section takes {sorted(fields)}")
  cfg = RewardConfig(**values, learned=learned)
  return dataclasses.replace(cfg, scorers=learned_scorers(cfg))


__all__ = ["ImplicitPRMScorer", "PRMScorer", "RewardModelScorer", "learned_scorers", "make_reward_config",
           "restore_params", "run_config"]
