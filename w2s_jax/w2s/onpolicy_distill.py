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

- estimator `full`: per token, the generalized JSD_β between the teacher's and the student's whole
  next-token distributions (`losses.distill.generalized_jsd_loss`): β = 1 the reverse KL(S‖T) (the
  on-policy distillation loss), β = 0 the forward KL(T‖S), between them GKD's mix.
- estimator `sampled`: the single-sample reverse-KL estimate as a per-token advantage,
  r_t = log T(y_t) − log S_old(y_t) (`reverse_kl_token_rewards`), in `policy_loss(kind="reinforce")`:
  ℓ_t = −r_t·log S(y_t), whose expected gradient is that of KL(S‖T). On-policy only (λ = 1).

Held-out evaluation (student at step 0, every `eval.every_steps` and at the end; the teacher once):
pass@1 / pass@k / maj@k from `eval.samples` samples per problem (`rl.evaluate`), and the exact per-token
reverse and forward KL between student and teacher on the student's held-out samples.

Workdir: `teacher/`, `student/` (the SFT phases, or shared `sft.workdir`s), `config.json`,
`metrics.jsonl`, `eval.jsonl` (the student's evaluations), `teacher_eval.json` (the teacher's, once),
`checkpoints/` ({iteration, prompt cursor}); rerunning resumes.

Legend: B prompts, G samples per prompt, R rows, P prompt slots, N completion slots, S = P + N, V vocab.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging as absl_logging
from flax import nnx
from tqdm import tqdm

from w2s_jax import sharding as shd
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.config_files import start_workdir
from w2s_jax.data.sft_sources import reasoning_problems
from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.losses.aggregation import aggregate, safe_ratio
from w2s_jax.losses.distill import generalized_jsd_loss, reverse_kl_token_rewards
from w2s_jax.losses.policy import policy_loss
from w2s_jax.models.presets import ModelConfig, from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.batch import minibatches
from w2s_jax.rl.evaluate import pass_maj_metrics, sample_eval
from w2s_jax.rl.loop import prompt_indices
from w2s_jax.rl.objective import completion_logprobs_jit
from w2s_jax.rl.rollout import PromptSet, RewardConfig, encode_prompts, sample_groups
from w2s_jax.rl.sft_init import run_sft
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.sampling.score import token_positions
from w2s_jax.train import step as step_lib
from w2s_jax.train.loop import Preempted, SigTermGuard
from w2s_jax.train.metrics_log import MetricsWriter
from w2s_jax.train.optim import make_optimizer, make_schedule
from w2s_jax.train.state import create_train_state
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
  raise ValueError(f"distill.estimator must be one of {ESTIMATORS}, got {estimator!r}")


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
    raise ValueError(f"distill.estimator must be one of {ESTIMATORS}, got {estimator!r}")

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


# ------------------------------------------------------------------------------------------------
# Models named in the config, each SFT'd first.
# ------------------------------------------------------------------------------------------------


def role_config(config: ml_collections.ConfigDict, role: str) -> ml_collections.ConfigDict:
  """The `run_sft` config of a model section (`config[role]` with `model` and `sft`) of a pipeline."""
  if role not in config:
    raise ValueError(f"the config has no section {role!r} (with `model` and `sft`)")
  c = ml_collections.ConfigDict()
  c.seed, c.sharding = int(config.seed), config.sharding
  c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
  c.model = ml_collections.ConfigDict(config[role].model.to_dict())
  c.data = ml_collections.ConfigDict(config.data.to_dict())
  c.sft = ml_collections.ConfigDict(config[role].sft.to_dict())
  return c


def role_model_config(config: ml_collections.ConfigDict, role: str) -> ModelConfig:
  return from_section(config[role].model)


def abstract_graphdef(model_cfg: ModelConfig) -> nnx.GraphDef:
  """A Transformer's graphdef without allocating weights (call under the mesh and rules)."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0))))[0]


def prepare_role(config: ml_collections.ConfigDict, role: str, workdir: Path):
  """SFTs (or reloads) `config[role]` in `workdir/role/sft` (or its `sft.workdir`).

  Returns:
    (model config, params, SFT summary).
  """
  params, summary = run_sft(role_config(config, role), workdir / role)
  return role_model_config(config, role), params, summary


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
  d = config.distill
  if d.estimator not in ESTIMATORS:
    raise ValueError(f"distill.estimator must be one of {ESTIMATORS}, got {d.estimator!r}")
  if not 0.0 <= d.beta <= 1.0:
    raise ValueError(f"distill.beta must be in [0, 1], got {d.beta}")
  if not 0.0 <= d.on_policy_frac <= 1.0:
    raise ValueError(f"distill.on_policy_frac (λ) must be in [0, 1], got {d.on_policy_frac}")
  if d.estimator == "sampled" and d.on_policy_frac != 1.0:
    raise ValueError("distill.estimator 'sampled' is on-policy only: set distill.on_policy_frac = 1")
  if config.rollout.temperature <= 0:
    raise ValueError("rollout.temperature must be > 0 (the student samples)")
  rows = config.rollout.prompts_per_step * config.rollout.group_size
  if config.train.minibatch_size <= 0 or rows % config.train.minibatch_size:
    raise ValueError(
      f"train.minibatch_size={config.train.minibatch_size} must divide the {rows} rollout rows")
  if config.teacher.model.vocab_size != config.student.model.vocab_size:
    raise ValueError("teacher.model.vocab_size and student.model.vocab_size must be equal (one tokenizer)")


def run_onpolicy_distill(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Runs (or resumes) on-policy distillation; see the module docstring.

  Returns:
    summary: `final_step`, `last`, `teacher_eval`, `student_eval_initial`, `student_eval`, the SFT
    summaries, `wall_s`.
  """
  with contextlib.ExitStack() as closing:  # closes the checkpointer (and its folder lock) on any exit
    return _run(config, workdir, closing)


def _run(
  config: ml_collections.ConfigDict, workdir: str | Path, closing: contextlib.ExitStack
) -> dict[str, Any]:
  validate(config)
  workdir = start_workdir(config, workdir)
  t0 = time.perf_counter()
  tokenizer = make_tokenizer(config.data.tokenizer)
  t_cfg, teacher_params, t_sft = prepare_role(config, "teacher", workdir)
  s_cfg, student_params, s_sft = prepare_role(config, "student", workdir)

  d, ro, dist = config.data, config.rollout, config.distill
  train_prompts = encode_prompts(reasoning_problems(d.task, "train", size=d.train_size, seed=d.data_seed),
                                 tokenizer, d.max_prompt_len)
  eval_prompts = encode_prompts(reasoning_problems(d.task, "eval", size=d.eval_size, train_size=d.train_size,
                                                   seed=d.data_seed), tokenizer, d.max_prompt_len)
  B, G, N, T = int(ro.prompts_per_step), int(ro.group_size), int(ro.max_new_tokens), float(ro.temperature)
  n_train, total = len(train_prompts.problems), int(config.total_steps)
  mesh, rules = shd.make_mesh(dict(config.mesh)), shd.get_rules(config.sharding)
  updates = total * int(config.train.epochs) * (B * G // int(config.train.minibatch_size))
  o = config.optimizer
  schedule = make_schedule(o.schedule, peak_lr=o.lr, total_steps=updates, warmup_steps=o.warmup_steps,
                           end_lr_frac=o.end_lr_frac)
  tx = make_optimizer(o, updates)

  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    s_graphdef, t_graphdef = abstract_graphdef(s_cfg), abstract_graphdef(t_cfg)
    abstract_state = jax.eval_shape(lambda: create_train_state(student_params, tx, config.seed))
    shardings = shd.tree_shardings(abstract_state, mesh, rules)
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, shardings)
    objective = onpolicy_distill_objective(estimator=dist.estimator, beta=float(dist.beta), temperature=T,
                                           reduction=config.train.reduction)
    train_step = step_lib.jit_train_step(
      step_lib.make_train_step(objective, tx, s_graphdef, schedule=schedule), shardings, mesh)
    sampling = SamplingConfig(max_new_tokens=N, temperature=T, stop_ids=(tokenizer.eos_id,),
                              pad_id=tokenizer.pad_id)
    s_sampler = Sampler(s_graphdef, sampling, mesh=mesh, rules=rules)

    ckpt = closing.enter_context(Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints))
    latest = ckpt.latest_step()
    if latest is None:
      params = jax.device_put(student_params, shardings.params)
      state = jax.jit(lambda p: create_train_state(p, tx, config.seed), out_shardings=shardings)(params)
      start, cursor = 0, 0
    else:
      state, data_state, _ = ckpt.restore(abstract_state)  # the newest intact step
      start, cursor = int(data_state["iteration"]), int(data_state["prompt_cursor"])

    ev = config.eval
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
    chunk = max(B * G // max(int(ev.samples), 1), 1)
    teacher = (t_graphdef, teacher_params)
    run_eval = lambda p: evaluate_model(s_sampler, p, eval_prompts, ev, eval_key, tokenizer, chunk,
                                        kl_against=teacher, graphdef=s_graphdef)
    summary: dict[str, Any] = {"teacher_sft": t_sft, "student_sft": s_sft, "start_step": start}
    eval_log = MetricsWriter(workdir, start_step=start, filename="eval.jsonl", tensorboard=False)
    teacher_file = workdir / "teacher_eval.json"
    if ev.samples:
      if not teacher_file.exists():
        t_sampler = Sampler(t_graphdef, sampling, mesh=mesh, rules=rules)
        t_eval = evaluate_model(t_sampler, teacher_params, eval_prompts, ev, eval_key, tokenizer, chunk)
        teacher_file.write_text(json.dumps(t_eval, indent=2))
      summary["teacher_eval"] = json.loads(teacher_file.read_text())
      if start == 0 and not eval_log.kept:
        eval_log.write(0, run_eval(state.params))
      summary["student_eval_initial"] = json.loads((workdir / "eval.jsonl").read_text().splitlines()[0])
    writer = MetricsWriter(workdir, start_step=start, tensorboard=jax.process_index() == 0)
    bar = tqdm(total=total, initial=start, desc="distill", unit="iter")
    rollout_key = jax.random.key(config.seed)

    with SigTermGuard() as sigterm:
      for it in range(start, total):
        rng = np.random.default_rng([int(config.seed), it])
        on_policy = bool(rng.random() < float(dist.on_policy_frac))
        stats: dict[str, float] = {"on_policy": float(on_policy)}
        if on_policy:
          idx = prompt_indices(cursor, B, n_train, config.seed)
          cursor += B
          ro_ = sample_groups(s_sampler, state.params, train_prompts.take(idx), G,
                              jax.random.fold_in(rollout_key, it), tokenizer, RewardConfig())
          host = {"tokens": ro_.tokens_RS, "mask": ro_.mask_RS.astype(np.int32),
                  "completion_mask": ro_.completion_mask_RN.astype(np.int32), "old_logp": ro_.sampler_logp_RN}
          stats.update(train_accuracy=float(ro_.correct_R.mean()), response_len=float(ro_.lengths_R.mean()))
        else:
          idx = prompt_indices(cursor, B * G, n_train, config.seed)
          cursor += B * G
          host = gold_rows(train_prompts.take(idx), tokenizer, N)
        records = []
        for _ in range(int(config.train.epochs)):
          for rows in minibatches(B * G, int(config.train.minibatch_size), rng):
            batch = shd.put_batch({k: v[rows] for k, v in host.items()}, mesh)
            if dist.estimator == "full":
              batch["teacher_logits"] = completion_logits_jit(t_graphdef, teacher_params, batch["tokens"],
                                                              batch["mask"], num_new=N)
            else:
              batch["teacher_logp"] = completion_logprobs_jit(t_graphdef, teacher_params, batch["tokens"],
                                                              batch["mask"], num_new=N, temperature=T)
            state, m = train_step(state, batch)
            records.append(m)
        records = jax.device_get(records)
        metrics = {k: float(np.mean([r[k] for r in records])) for k in records[0]
                   if k not in ("weight", *step_lib.GUARD_METRICS)}
        streak = int(records[-1]["nonfinite_streak"])
        if streak >= config.max_nonfinite_streak:
          raise step_lib.NonFiniteError(f"iteration {it + 1}: " + step_lib.nonfinite_message(
            streak, int(records[-1]["nonfinite_cause"]), int(jax.device_get(state.step)),
            config.optimizer.lr))
        metrics.update(stats, prompt_cursor=cursor)
        s = it + 1
        if ev.samples and (s == total or (ev.every_steps and s % ev.every_steps == 0)):
          e = run_eval(state.params)
          eval_log.write(s, e)
          summary["student_eval"] = e
          metrics.update({f"eval_{k}": v for k, v in e.items()})
        summary["last"] = writer.write(s, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if streak and (s % config.checkpoint_every_steps == 0 or s == total or sigterm.received):
          absl_logging.warning("iteration %d: no checkpoint while %d updates in a row were non-finite", s,
                               streak)
        elif s % config.checkpoint_every_steps == 0 or s == total or sigterm.received:
          ckpt.save(s, state, data_state={"iteration": s, "prompt_cursor": cursor},
                    config=json.loads(config.to_json_best_effort()), force=sigterm.received or s == total)
        if sigterm.received:
          ckpt.wait()
          writer.close()
          eval_log.close()
          raise Preempted()
    ckpt.wait()
    ckpt.close()
    writer.close()
    eval_log.close()
    bar.close()
  if ev.samples and "student_eval" not in summary:  # resumed after the last iteration: read it back
    summary["student_eval"] = json.loads((workdir / "eval.jsonl").read_text().splitlines()[-1])
  summary.update(final_step=total, wall_s=time.perf_counter() - t0)
  return summary
