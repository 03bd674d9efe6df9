"""On-policy distillation: the student samples, the teacher scores, per-token KL (task "onpolicy_distill").

GKD (Agarwal et al. 2024, arXiv 2306.13649) and on-policy distillation (Lu & Thinking Machines 2025).
Teacher and student are both named in the config (`teacher`, `student`: preset + an SFT budget on worked
solutions, through `rl.sft_init.run_sft`), so the same pipeline runs strong→weak (a bigger / longer-SFT'd
teacher) and weak→strong (a weak teacher supervising a larger student). They must share the tokenizer
and vocabulary.

One iteration: with probability λ (`distill.on_policy_frac`, GKD's λ, drawn per iteration from
(seed, iteration)) the student samples G completions for each of B train prompts (the sampler);
otherwise the batch is B·G train problems' gold worked solutions (GKD's fixed-dataset branch). The
teacher scores every completion token; `train.epochs` passes of minibatches go through the one train
step with `onpolicy_distill_objective`:

- `loss.name = "full"`: per token, the generalized JSD_β between the teacher's and the student's whole
  next-token distributions (`losses.distill.generalized_jsd_loss`): β = 1 the reverse KL(S‖T) (the
  on-policy distillation loss), β = 0 the forward KL(T‖S), between them GKD's mix.
- `loss.name = "sampled"`: the single-sample reverse-KL estimate as a per-token advantage,
  r_t = log T(y_t) − log S_old(y_t) (`reverse_kl_token_rewards`), in `policy_loss(kind="reinforce")`:
  ℓ_t = −r_t·log S(y_t), whose expected gradient is that of KL(S‖T). On-policy only (λ = 1).

Held-out evaluation (student at step 0, every `eval_every_steps` and at the end; the teacher once):
pass@1 / pass@k / maj@k from `eval.samples` samples per problem (`rl.evaluate`), and the exact per-token
reverse and forward KL between student and teacher on the student's held-out samples.

Workdir: `teacher/`, `student/` (the SFT phases, or shared `sft.workdir`s), `config.json`,
`metrics.jsonl`, `eval.jsonl` (the student's evaluations), `teacher_eval.json` (the teacher's, once),
`checkpoints/` ({iteration, prompt cursor}); rerunning resumes.

Legend: B prompts, G samples per prompt, R rows, P prompt slots, N completion slots, S = P + N, V vocab.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.config_files import start_workdir
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.losses.aggregation import aggregate, safe_ratio
from w2s_jax.losses.distill import generalized_jsd_loss, reverse_kl_token_rewards
from w2s_jax.losses.policy import policy_loss
from w2s_jax.models.presets import ModelConfig
from w2s_jax.models.transformer import Transformer
from w2s_jax.pipeline_shell import write_json
from w2s_jax.rl.batch import minibatches
from w2s_jax.rl.evaluate import pass_maj_metrics, sample_eval
from w2s_jax.rl.loop import prompt_indices
from w2s_jax.rl.objective import completion_logprobs_jit
from w2s_jax.rl.roles import abstract_graphdef, prepare_role
from w2s_jax.rl.rollout import PromptSet, RewardConfig, encode_prompts, sample_groups
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.sampling.score import token_positions
from w2s_jax.train import step as step_lib
from w2s_jax.train.runtime import Evaluator, Runtime, Update, full_params
from w2s_jax.train.step import Batch, Objective
from w2s_jax.train.tasks import make_tokenizer

ESTIMATORS = ("full", "sampled")


# ------------------------------------------------------------------------------------------------
# The loss (pure) and the objective.
# ------------------------------------------------------------------------------------------------


def distill_token_loss(
  student_logits_RNV: jax.Array,
  tokens_RN: jax.Array,
  mask_RN: jax.Array,
  *,
  estimator: str = "full",
  beta: float = 1.0,
  temperature: float = 1.0,
  teacher_logits_RNV: jax.Array | None = None,
  teacher_logp_RN: jax.Array | None = None,
  old_logp_RN: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-token distillation loss of completion tokens (see the module docstring).

  Args:
    student_logits_RNV: the student's logits predicting completion token n [R, N, V] (differentiated).
    tokens_RN: the completion tokens [R, N].
    mask_RN: 1 on trained completion tokens [R, N].
    estimator: `full` (generalized JSD_β of whole distributions; needs `teacher_logits_RNV`) or
      `sampled` (−r_t·log S(y_t) with r_t = log T(y_t) − log S_old(y_t); needs `teacher_logp_RN` and
      `old_logp_RN`, both at `temperature`).
    beta: β of `generalized_jsd_loss` (`full` only): 1 = reverse KL, 0 = forward KL.
    temperature: logits are divided by it.
    teacher_logits_RNV, teacher_logp_RN, old_logp_RN: the teacher's logits / token log-probs and the
      sampling policy's token log-probs (constants).

  Returns:
    (loss_RN, 0 off the mask; metrics `reverse_kl_RN` (exact for `full`, the single-sample estimate
    log S_old − log T for `sampled`) and, for `full`, `forward_kl_RN`).
  """
  if estimator == "full":
    if teacher_logits_RNV is None:
      raise ValueError("estimator 'full' needs the teacher's logits (teacher_logits_RNV)")
    loss_RN, aux = generalized_jsd_loss(student_logits_RNV, teacher_logits_RNV, mask_RN, beta=beta,
                                        temperature=temperature)
    return loss_RN, {"reverse_kl_RN": aux["reverse_kl_BL"], "forward_kl_RN": aux["forward_kl_BL"]}
  if estimator == "sampled":
    if teacher_logp_RN is None or old_logp_RN is None:
      raise ValueError("estimator 'sampled' needs teacher_logp_RN and old_logp_RN")
    logp_RNV = jax.nn.log_softmax(student_logits_RNV.astype(jnp.float32) / temperature, axis=-1)
    logp_RN = jnp.take_along_axis(logp_RNV, tokens_RN[..., None], axis=-1)[..., 0]
    adv_RN = reverse_kl_token_rewards(old_logp_RN, teacher_logp_RN, mask_RN)
    loss_RN, _ = policy_loss(logp_RN, old_logp_RN, adv_RN, mask_RN, kind="reinforce")
    return loss_RN * mask_RN, {"reverse_kl_RN": -adv_RN}
  raise ValueError(f"loss.name (the estimator) must be one of {ESTIMATORS}, got {estimator!r}")


def completion_logits(
  model: Transformer, tokens_RS: jax.Array, mask_RS: jax.Array, num_new: int
) -> jax.Array:
  """Logits of the slots that predict the last `num_new` tokens [R, N, V] (the `score_fn` layout)."""
  S = tokens_RS.shape[1]
  mask_RS = mask_RS.astype(jnp.int32)
  hidden_RSD = model.hidden(tokens_RS, positions_BL=token_positions(mask_RS), segment_ids_BL=mask_RS)
  return model.logits_from_hidden(hidden_RSD[:, S - num_new - 1 : S - 1]).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "num_new"))
def completion_logits_jit(graphdef: nnx.GraphDef, params: Any, tokens_RS: jax.Array, mask_RS: jax.Array, *,
                          num_new: int) -> jax.Array:
  """Jitted `completion_logits` of a Transformer's (graphdef, params) [R, N, V]."""
  return completion_logits(nnx.merge(graphdef, params), tokens_RS, mask_RS, num_new)


def onpolicy_distill_objective(
  *, estimator: str = "full", beta: float = 1.0, temperature: float = 1.0, reduction: str = "token-mean"
) -> Objective:
  """`objective(model, batch, rng)` for `make_train_step`: `distill_token_loss` of the student model.

  Batch: `tokens`, `mask` [R, S]; `completion_mask` [R, N]; `teacher_logits` [R, N, V] (`full`) or
  `teacher_logp`, `old_logp` [R, N] (`sampled`).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"loss.name (the estimator) must be one of {ESTIMATORS}, got {estimator!r}")

  def objective(model: nnx.Module, batch: Batch, rng: jax.Array):
    del rng
    mask_RN = batch["completion_mask"]
    N = mask_RN.shape[1]
    logits_RNV = completion_logits(model, batch["tokens"], batch["mask"], N)
    loss_RN, aux = distill_token_loss(
      logits_RNV, batch["tokens"][:, -N:], mask_RN, estimator=estimator, beta=beta,
      temperature=temperature, teacher_logits_RNV=batch.get("teacher_logits"),
      teacher_logp_RN=batch.get("teacher_logp"), old_logp_RN=batch.get("old_logp"))
    loss_sum, weight = aggregate(loss_RN, mask_RN, reduction)
    sums = {}
    for name in ("reverse_kl", "forward_kl"):
      if f"{name}_RN" in aux:  # per-token means, weighted like the loss
        sums[name] = safe_ratio(*aggregate(jax.lax.stop_gradient(aux[f"{name}_RN"]), mask_RN, "token-mean"))
        sums[name] = sums[name] * weight
    return loss_sum, weight, sums

  return objective


def gold_rows(prompts: PromptSet, tokenizer: Tokenizer, num_new: int) -> dict[str, np.ndarray]:
  """Prompts followed by their gold worked solution + EOS in the sampler slot layout (cut at N tokens).

  Returns:
    `tokens` [R, P + N], `mask` [R, P + N] and `completion_mask` [R, N] (int32).
  """
  R, P = prompts.tokens_BP.shape
  comp_RN = np.full((R, num_new), tokenizer.pad_id, np.int32)
  cmask_RN = np.zeros((R, num_new), np.int32)
  for r, p in enumerate(prompts.problems):
    ids = [*tokenizer.encode(p.solution), tokenizer.eos_id][:num_new]
    comp_RN[r, : len(ids)], cmask_RN[r, : len(ids)] = ids, 1
  tokens = np.concatenate([prompts.tokens_BP.astype(np.int32), comp_RN], axis=1)
  mask = np.concatenate([prompts.mask_BP.astype(np.int32), cmask_RN], axis=1)
  return {"tokens": tokens, "mask": mask, "completion_mask": cmask_RN}


def pair_kl(student: tuple[nnx.GraphDef, Any], teacher: tuple[nnx.GraphDef, Any], tokens_RS: np.ndarray,
            mask_RS: np.ndarray, cmask_RN: np.ndarray, chunk: int) -> dict[str, float]:
  """Exact per-token reverse KL(S‖T) and forward KL(T‖S) on given completions, `chunk` rows at a time."""
  N, R = cmask_RN.shape[1], tokens_RS.shape[0]
  sums = np.zeros(3)
  for i in range(0, R, chunk):
    rows = [(i + j) % R for j in range(chunk)]  # one compiled shape: the last chunk wraps, then is cut
    keep = min(chunk, R - i)
    t, m, c = tokens_RS[rows], mask_RS[rows], cmask_RN[rows].astype(np.float32)
    s_logits = completion_logits_jit(*student, t, m, num_new=N)
    t_logits = completion_logits_jit(*teacher, t, m, num_new=N)
    _, aux = generalized_jsd_loss(s_logits, t_logits, c, beta=1.0)
    rk, fk = (np.asarray(aux[k])[:keep] for k in ("reverse_kl_BL", "forward_kl_BL"))
    sums += [rk.sum(), fk.sum(), c[:keep].sum()]
  return {"reverse_kl": float(sums[0] / max(sums[2], 1.0)), "forward_kl": float(sums[1] / max(sums[2], 1.0))}


def evaluate_model(sampler: Sampler, params: Any, prompts: PromptSet, ev: ml_collections.ConfigDict,
                   key: jax.Array, tokenizer: Tokenizer, chunk_prompts: int, kl_against=None,
                   graphdef: nnx.GraphDef | None = None) -> dict[str, float]:
  """pass@k / maj@k on held-out prompts (`rl.evaluate`), plus KL to `kl_against` = (graphdef, params)."""
  n = int(ev.samples)
  rollout = sample_eval(sampler, params, prompts, n, key, tokenizer, chunk_prompts)
  Pn = len(rollout.problems)
  answers = [rollout.answers[i * n : (i + 1) * n] for i in range(Pn)]
  out = pass_maj_metrics(rollout.problems, rollout.correct_R.reshape(Pn, n), answers, list(ev.ks))
  out["response_len"] = float(np.mean(rollout.lengths_R))
  if kl_against is not None:
    out.update(pair_kl((graphdef, params), kl_against, rollout.tokens_RS, rollout.mask_RS.astype(np.int32),
                       rollout.completion_mask_RN, chunk=chunk_prompts * n))
  return out


# ------------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key."""
  d, loss = config.distill, config.loss
  if loss.name not in ESTIMATORS:
    raise ValueError(f"loss.name must be one of {ESTIMATORS}, got {loss.name!r}")
  if not 0.0 <= loss.beta <= 1.0:
    raise ValueError(f"loss.beta must be in [0, 1], got {loss.beta}")
  if not 0.0 <= d.on_policy_frac <= 1.0:
    raise ValueError(f"distill.on_policy_frac (λ) must be in [0, 1], got {d.on_policy_frac}")
  if loss.name == "sampled" and d.on_policy_frac != 1.0:
    raise ValueError("loss.name 'sampled' is on-policy only: set distill.on_policy_frac = 1")
  if config.rollout.temperature <= 0:
    raise ValueError("rollout.temperature must be > 0 (the student samples)")
  rows = config.rollout.prompts_per_step * config.rollout.group_size
  if config.train.minibatch_size <= 0 or rows % config.train.minibatch_size:
    raise ValueError(
      f"train.minibatch_size={config.train.minibatch_size} must divide the {rows} rollout rows")
  if config.teacher.model.vocab_size != config.student.model.vocab_size:
    raise ValueError("teacher.model.vocab_size and student.model.vocab_size must be equal (one tokenizer)")


def run_onpolicy_distill(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) on-policy distillation on the one runtime (`train.runtime`); see the module
  docstring.

  Returns:
    summary: `final_step`, `last`, `teacher_eval`, `student_eval_initial`, `student_eval`, the SFT
    summaries, `wall_s`.
  """
  validate(config)
  workdir = start_workdir(config, workdir)
  tokenizer = make_tokenizer(config.data.tokenizer)
  t_cfg, teacher_params, t_sft = prepare_role(config, "teacher", workdir)
  s_cfg, student_params, s_sft = prepare_role(config, "student", workdir)
  d, ro = config.data, config.rollout
  train_prompts = encode_prompts(reasoning_problems(d.task, "train", size=d.train_size, seed=d.seed),
                                 tokenizer, d.max_prompt_len)
  eval_prompts = encode_prompts(reasoning_problems(d.task, "eval", size=d.eval_size, train_size=d.train_size,
                                                   seed=d.seed), tokenizer, d.max_prompt_len)
  B, G = int(ro.prompts_per_step), int(ro.group_size)
  total = int(config.total_steps)
  rt = Runtime(config, workdir, total_steps=total, desc="distill", lora=config.student.model.get("lora", {}),
               total_updates=total * int(config.train.epochs) * (B * G // int(config.train.minibatch_size)))
  summary: dict[str, Any] = {"teacher_sft": t_sft, "student_sft": s_sft}
  with rt:
    run = _DistillRun(config, rt, tokenizer, train_prompts, (t_cfg, teacher_params), (s_cfg, student_params))
    state = rt.init_or_restore(params=lambda: student_params)
    run.cursor = int(rt.data_state.get("prompt_cursor", 0))
    ev, evaluator = config.eval, None
    if ev.samples:
      summary["teacher_eval"] = run.teacher_eval(workdir / "teacher_eval.json", eval_prompts)
      evaluator = Evaluator(lambda s: run.evaluate(full_params(s), eval_prompts),
                            every=int(config.eval_every_steps or 0), at_start=True, prefix="eval_")
    rt.run(state, run.iteration, evaluator=evaluator)
  if ev.samples:
    summary["student_eval_initial"] = rt.summary.get("eval_initial")
    # resumed after the last iteration: the last evaluation is read back
    summary["student_eval"] = rt.summary.get("eval") or _last_eval(workdir)
  summary.update(start_step=rt.start, last=rt.summary.get("last"), final_step=total, wall_s=rt.wall_s)
  return summary


def _last_eval(workdir: Path) -> dict[str, float]:
  return json.loads((workdir / "eval.jsonl").read_text().splitlines()[-1])


class _DistillRun:
  """One distillation run's models, samplers and prompt position; `iteration` is the runtime's step."""

  def __init__(self, config: ml_collections.ConfigDict, rt: Runtime, tokenizer: Tokenizer, prompts: PromptSet,
               teacher: tuple[ModelConfig, Any], student: tuple[ModelConfig, Any]):
    self.config, self.rt, self.tokenizer, self.prompts = config, rt, tokenizer, prompts
    ro, self.dist = config.rollout, config.distill
    self.B, self.G, self.N, self.T = (int(ro.prompts_per_step), int(ro.group_size), int(ro.max_new_tokens),
                                      float(ro.temperature))
    self.t_graphdef, self.teacher_params = abstract_graphdef(teacher[0]), teacher[1]
    # the student (adapters only under student.model.lora; the sampler reads W' through them)
    self.s_graphdef = rt.model(lambda rngs: Transformer(student[0], rngs=rngs), params=lambda: student[1])
    objective = onpolicy_distill_objective(estimator=config.loss.name, beta=float(config.loss.beta),
                                           temperature=self.T, reduction=config.loss.reduction)
    self.train_step = rt.train_step(objective, self.s_graphdef)
    self.sampling = SamplingConfig(max_new_tokens=self.N, temperature=self.T, stop_ids=(tokenizer.eos_id,),
                                   pad_id=tokenizer.pad_id)
    self.sampler = Sampler(self.s_graphdef, self.sampling, mesh=rt.mesh, rules=rt.rules)
    self.eval_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
    self.chunk = max(self.B * self.G // max(int(config.eval.samples), 1), 1)
    self.cursor = 0

  def evaluate(self, params: Any, prompts: PromptSet) -> dict[str, float]:
    """The student's held-out evaluation, with its KL to the teacher."""
    teacher = (self.t_graphdef, self.teacher_params)
    return evaluate_model(self.sampler, params, prompts, self.config.eval, self.eval_key, self.tokenizer,
                          self.chunk, kl_against=teacher, graphdef=self.s_graphdef)

  def teacher_eval(self, path: Path, prompts: PromptSet) -> dict[str, float]:
    """The teacher's held-out evaluation, made once and kept in `path`."""
    if not path.exists():
      t_sampler = Sampler(self.t_graphdef, self.sampling, mesh=self.rt.mesh, rules=self.rt.rules)
      t_eval = evaluate_model(t_sampler, self.teacher_params, prompts, self.config.eval, self.eval_key,
                              self.tokenizer, self.chunk)
      write_json(path, t_eval, indent=2)
    return json.loads(path.read_text())

  def _rows(self, state, it: int, on_policy: bool, stats: dict[str, float]) -> dict[str, np.ndarray]:
    """The iteration's rows: the student's samples (on-policy) or gold worked solutions."""
    B, G, n = self.B, self.G, len(self.prompts.problems)
    if not on_policy:
      idx = prompt_indices(self.cursor, B * G, n, self.config.seed)
      self.cursor += B * G
      return gold_rows(self.prompts.take(idx), self.tokenizer, self.N)
    idx = prompt_indices(self.cursor, B, n, self.config.seed)
    self.cursor += B
    key = jax.random.fold_in(jax.random.key(self.config.seed), it)
    ro_ = sample_groups(self.sampler, full_params(state), self.prompts.take(idx), G, key, self.tokenizer,
                        RewardConfig())
    stats.update(train_accuracy=float(ro_.correct_R.mean()), response_len=float(ro_.lengths_R.mean()))
    return {"tokens": ro_.tokens_RS, "mask": ro_.mask_RS.astype(np.int32),
            "completion_mask": ro_.completion_mask_RN.astype(np.int32), "old_logp": ro_.sampler_logp_RN}

  def iteration(self, state, it: int) -> tuple[Any, Update]:
    """Rows (sampled with probability λ) → teacher scores → `train.epochs` passes of minibatch updates."""
    rng = np.random.default_rng([int(self.config.seed), it])
    on_policy = bool(rng.random() < float(self.dist.on_policy_frac))
    stats: dict[str, float] = {"on_policy": float(on_policy)}
    host = self._rows(state, it, on_policy, stats)
    records = []
    for _ in range(int(self.config.train.epochs)):
      for rows in minibatches(self.B * self.G, int(self.config.train.minibatch_size), rng):
        batch = shd.put_batch({k: v[rows] for k, v in host.items()}, self.rt.mesh)
        scored = (self.t_graphdef, self.teacher_params, batch["tokens"], batch["mask"])
        if self.config.loss.name == "full":
          batch["teacher_logits"] = completion_logits_jit(*scored, num_new=self.N)
        else:
          batch["teacher_logp"] = completion_logprobs_jit(*scored, num_new=self.N, temperature=self.T)
        state, m = self.train_step(state, batch)
        records.append(m)
    records = jax.device_get(records)
    metrics = {k: float(np.mean([r[k] for r in records])) for k in records[0]
               if k not in ("weight", *step_lib.GUARD_METRICS)}
    metrics.update(stats, prompt_cursor=self.cursor)
    return state, Update(metrics, records[-1]["nonfinite_streak"], records[-1]["nonfinite_cause"], state.step,
                         {"iteration": it + 1, "prompt_cursor": self.cursor})
