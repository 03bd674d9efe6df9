"""The RL loop with verifiable rewards: rollout → advantages → epochs of minibatch updates → repeat.

One iteration (a logged `step`): take the next B prompts of the train split, draw G samples each, score
them with the task's verifier (+ format / overlong terms), optionally drop zero-variance groups and refill
from further prompts (DAPO dynamic sampling), compute old-policy log-probs (the sampler's or recomputed),
reference log-probs and critic values when needed, advantages by name, then `train.epochs` passes of
random minibatches through the one train step (`make_train_step` with `rl_objective`). The policy starts
from the SFT phase (`w2s_jax.rl.sft_init`), which is also the frozen reference model of the KL penalty.

Tree estimators (`w2s_jax.rl.tree_rollout`): `rollout.kind = "tree"` draws TreeRL's entropy-forked trees
instead of G independent samples (rows = leaves, advantage `treerl`); advantage `vineppo` adds K Monte
Carlo rollouts from every step boundary of each sampled response; `tempo` needs only the ordinary group.
Every record counts `sampled_tokens` (all tokens generated that iteration, Monte Carlo rollouts included).

Workdir: `config.json`, `metrics.jsonl` (one record per iteration: `step`, `loss`, rollout and update
statistics, `eval_*` at evaluations), `eval.jsonl` (every evaluation, step 0 included), `timing.jsonl`
(wall seconds of each iteration, evaluation excluded), TensorBoard
events, `checkpoints/` (train state + {iteration, prompt cursor}), `sft/` (the SFT phase). Rerunning
the same command resumes; everything random is keyed by (seed, iteration), so the resumed run's metrics
equal the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from w2s_jax import sharding as shd
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.config_files import start_workdir
from w2s_jax.data.chat import resolve_template
from w2s_jax.data.limits import check_model_length
from w2s_jax.data.sft_sources import problems_from_config
from w2s_jax.losses.policy import unlikeliness_rewards
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.references import resolve_reference
from w2s_jax.rewards.compose import make_reward_config
from w2s_jax.rl import batch as batch_lib
from w2s_jax.rl import tree_rollout
from w2s_jax.rl.evaluate import evaluate
from w2s_jax.rl.objective import ActorCritic, completion_logprobs_jit, critic_values_jit, rl_objective
from w2s_jax.rl.rollout import collect_groups, encode_prompts, sample_groups
from w2s_jax.rl.sft_init import run_sft
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train import step as step_lib
from w2s_jax.train.loop import Preempted, SigTermGuard
from w2s_jax.train.metrics_log import MetricsWriter
from w2s_jax.train.optim import make_optimizer, make_schedule
from w2s_jax.train.state import create_train_state
from w2s_jax.train.tasks import make_tokenizer


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def prompt_indices(cursor: int, count: int, num_prompts: int, seed: int) -> np.ndarray:
  """Prompts `cursor … cursor + count − 1` of the stream: each pass over the split is a fresh permutation."""
  return np.array([_epoch_order(seed, c // num_prompts, num_prompts)[c % num_prompts]
                   for c in range(cursor, cursor + count)], np.int64)


def _none_if_zero(x: float) -> float | None:
  return float(x) if x else None


def make_objective(config: ml_collections.ConfigDict):
  """`rl_objective` from the config's `loss`, `kl` and `rollout` sections."""
  loss, kl = config.loss, config.kl
  return rl_objective(
    loss_kind=loss.kind, reduction=loss.reduction, clip_eps=_none_if_zero(loss.clip_eps),
    clip_eps_high=_none_if_zero(loss.clip_eps_high), dual_clip_c=_none_if_zero(loss.dual_clip_c),
    topr_level=loss.topr_level, use_is_ratio=bool(loss.use_is_ratio),
    positive_weight=float(loss.positive_weight), negative_weight=float(loss.negative_weight),
    kl_coef=float(kl.coef) if kl.where == "loss" else 0.0, kl_kind=kl.kind,
    temperature=float(config.rollout.temperature),
    value_coef=float(loss.value_coef) if config.advantage.name == "gae" else 0.0,
    value_clip=_none_if_zero(loss.value_clip),
  )


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key, on settings the loop cannot run."""
  batch_lib.check_advantage_name(config.advantage.name)
  if config.kl.where not in ("loss", "reward"):
    raise ValueError(f"kl.where must be 'loss' or 'reward', got {config.kl.where!r}")
  if config.rollout.temperature <= 0:
    raise ValueError("rollout.temperature must be > 0 (policy gradients need a sampling distribution)")
  if config.rollout.group_size < 1 or config.rollout.prompts_per_step < 1:
    raise ValueError("rollout.group_size and rollout.prompts_per_step must be >= 1")
  if config.advantage.name == "gae" and config.loss.value_coef <= 0:
    raise ValueError("advantage 'gae' trains a critic: set loss.value_coef > 0")
  if config.advantage.name == "rft" and config.loss.kind != "reinforce":
    raise ValueError("advantage 'rft' (rejection-sampling SFT) needs loss.kind='reinforce'")
  ro, name = config.rollout, config.advantage.name
  kind = ro.get("kind", "group")
  if kind not in ("group", "tree"):
    raise ValueError(f"rollout.kind must be 'group' or 'tree', got {kind!r}")
  if (kind == "tree") != (name == "treerl"):
    raise ValueError(f"advantage 'treerl' and rollout.kind='tree' go together (got {name!r}, {kind!r})")
  if kind == "tree":
    t = ro.tree
    leaves, _ = tree_rollout.tree_size(t.n_roots, t.n_iters, t.top_n, t.n_forks)
    if min(t.n_roots, t.n_forks) < 1 or min(t.n_iters, t.top_n) < 0 or ro.group_size != leaves:
      raise ValueError(f"rollout.group_size={ro.group_size} must equal the tree's leaves n_roots + "
                       f"n_iters·top_n·n_forks = {leaves} (rollout.tree; n_roots, n_forks >= 1)")
  if name in ("treerl", "vineppo"):
    if config.dynamic_sampling.enabled:
      raise ValueError(f"advantage {name!r} does not support dynamic_sampling.enabled")
    if config.kl.coef > 0 and config.kl.where == "reward":
      raise ValueError(f"advantage {name!r} takes the KL in the loss: set kl.where='loss'")
  if name == "vineppo" and (config.advantage.mc_rollouts < 1 or config.advantage.mc_max_steps < 1
                            or not config.advantage.step_boundary):
    raise ValueError("vineppo needs advantage.mc_rollouts >= 1, advantage.mc_max_steps >= 1 and a "
                     "non-empty advantage.step_boundary")
  rows = config.rollout.prompts_per_step * config.rollout.group_size
  if config.train.minibatch_size <= 0 or rows % config.train.minibatch_size:
    raise ValueError(
      f"train.minibatch_size={config.train.minibatch_size} must divide the {rows} rollout rows")


def _mean_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
  if not records:
    return {}
  records = jax.device_get(records)
  keys = [k for k in records[0] if k not in (*step_lib.GUARD_METRICS, "weight")]
  out = {k: float(np.mean([float(r[k]) for r in records])) for k in keys}
  out["lr"] = float(records[-1].get("lr", 0.0))
  return out


def train_rl(
  config: ml_collections.ConfigDict, workdir: str | Path, *,
  reward_fn: Callable[[Sequence[Any], Sequence[str]], np.ndarray] | None = None,
) -> dict[str, Any]:
  """Runs (or resumes) the RL job described by `config` in `workdir`; see the module docstring.

  Args:
    config: the RL config (`configs/rl_base.py`).
    workdir: output folder (resumed when it holds checkpoints).
    reward_fn: a learned reward, `fn(problems_R, texts_R) -> scores [R]` (a verifier or reward model),
      added to every rollout's reward with weight `config.reward.learned_coef` (see `RewardConfig`).

  Returns:
    summary: `final_step`, `last` (the last metrics record), `eval` (the last evaluation), `eval_initial`,
    `sft` (the SFT phase's summary), `wall_s` and the final `state`.
  """
  with contextlib.ExitStack() as closing:  # closes the checkpointer (and its folder lock) on any exit
    return _train_rl(config, workdir, reward_fn, closing)


def _train_rl(
  config: ml_collections.ConfigDict, workdir: str | Path,
  reward_fn: Callable[[Sequence[Any], Sequence[str]], np.ndarray] | None, closing: contextlib.ExitStack,
) -> dict[str, Any]:
  validate(config)
  workdir = start_workdir(config, workdir)
  t0 = time.perf_counter()
  tokenizer = make_tokenizer(config.data.tokenizer)
  d, ro, adv_cfg = config.data, config.rollout, config.advantage
  # Prompts first: a too-long prompt stops the run before the SFT phase (data.long_prompts: error | skip).
  on_long, template = d.get("long_prompts", "error"), resolve_template(d.get("chat_template", ""), tokenizer)
  train_prompts, eval_prompts = (encode_prompts(problems_from_config(d, split), tokenizer, d.max_prompt_len,
                                                on_long=on_long, chat_template=template)
                                 for split in ("train", "eval"))
  reward_cfg = make_reward_config(config.reward, learned=reward_fn)  # loads learned terms' runs
  if reward_cfg.learned_coef and reward_fn is None:
    raise ValueError("reward.learned_coef > 0 but train_rl got no reward_fn (a learned reward is passed "
                     "in code: train_rl(config, workdir, reward_fn=...))")
  if reward_cfg.custom:
    resolve_reference(reward_cfg.custom, "reward.custom")  # fails here, not after the SFT phase
  max_seq_len = from_section(config.model).max_seq_len
  check_model_length(int(d.max_prompt_len) + int(ro.max_new_tokens), max_seq_len,
                     "prompts + completions (data.max_prompt_len + rollout.max_new_tokens)")
  check_model_length(int(config.sft.seq_len), max_seq_len, "SFT rows (sft.seq_len)")
  sft_params, sft_summary = run_sft(config, workdir)
  B, G, N = int(ro.prompts_per_step), int(ro.group_size), int(ro.max_new_tokens)
  temperature = float(ro.temperature)
  use_critic = adv_cfg.name == "gae"
  kind = ro.get("kind", "group")

  mesh = shd.make_mesh(dict(config.mesh))
  rules = shd.get_rules(config.sharding)
  total = int(config.total_steps)
  updates_per_iter = int(config.train.epochs) * (B * G // int(config.train.minibatch_size))
  schedule = make_schedule(config.optimizer.get("schedule", "constant"), peak_lr=config.optimizer.lr,
                           total_steps=total * updates_per_iter,
                           warmup_steps=config.optimizer.get("warmup_steps", 0),
                           end_lr_frac=config.optimizer.get("end_lr_frac", 0.0))
  tx = make_optimizer(config.optimizer, total * updates_per_iter)
  model_cfg = from_section(config.model)
  make_model = (lambda rngs: ActorCritic(model_cfg, rngs=rngs)) if use_critic else (
    lambda rngs: Transformer(model_cfg, rngs=rngs))

  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    abstract = nnx.eval_shape(lambda: make_model(nnx.Rngs(config.seed)))
    graphdef, abstract_params = nnx.split(abstract)
    policy_graphdef = nnx.split(abstract.policy)[0] if use_critic else graphdef
    abstract_state = jax.eval_shape(lambda: create_train_state(abstract_params, tx, config.seed))
    shardings = shd.tree_shardings(abstract_state, mesh, rules)
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, shardings)
    policy_shardings = shardings.params["policy"] if use_critic else shardings.params
    ref_params = jax.device_put(sft_params, policy_shardings)

    step = step_lib.make_train_step(make_objective(config), tx, graphdef, schedule=schedule)
    train_step = step_lib.jit_train_step(step, shardings, mesh)
    sampler = Sampler(policy_graphdef, SamplingConfig(
      max_new_tokens=N, temperature=temperature, top_p=_none_if_zero(ro.top_p),
      stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id), mesh=mesh, rules=rules)
    # VinePPO forks the finished rows of each draw: keep the draw's decode state.
    group_sampler = tree_rollout.KeepStateSampler(sampler) if adv_cfg.name == "vineppo" else sampler
    boundary_ids = tuple(tokenizer.encode(adv_cfg.get("step_boundary", "\n")))

    ckpt = closing.enter_context(Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints))
    latest = ckpt.latest_step()
    if latest is None:
      if use_critic:
        _, params = nnx.split(make_model(nnx.Rngs(config.seed)))
        params["policy"] = sft_params
        params["critic"]["backbone"] = sft_params
      else:
        params = sft_params
      params = jax.device_put(params, shardings.params)
      state = jax.jit(lambda p: create_train_state(p, tx, config.seed), out_shardings=shardings)(params)
      start, cursor, spent = 0, 0, 0
    else:
      state, data_state, _ = ckpt.restore(abstract_state)  # the newest intact step
      start, cursor = int(data_state["iteration"]), int(data_state["prompt_cursor"])
      spent = int(data_state.get("sampled_tokens", 0))
      logging.info("resumed RL from %s at iteration %d", ckpt.directory, start)

    policy_params = lambda s: s.params["policy"] if use_critic else s.params
    ev_cfg = config.eval
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
    # rl_seed (>= 0) varies the RL draws, prompt order and minibatches but not the model, SFT or evaluation.
    rl_seed = int(config.get("rl_seed", -1))
    rl_seed = int(config.seed) if rl_seed < 0 else rl_seed
    rollout_key = jax.random.key(rl_seed)
    budget = int(config.get("sample_budget", 0))  # stop once this many tokens were sampled (0 = off)
    # eval.jsonl: one record per evaluation, truncated to the resume step like metrics.jsonl.
    eval_log = MetricsWriter(workdir, start_step=start, filename="eval.jsonl", tensorboard=False)

    def run_eval(s) -> dict[str, float]:
      return evaluate(sampler, policy_params(s), eval_prompts, int(ev_cfg.samples), list(ev_cfg.ks), eval_key,
                      tokenizer, chunk_prompts=max(B * G // int(ev_cfg.samples), 1))

    summary: dict[str, Any] = {"sft": sft_summary, "start_step": start}
    if ev_cfg.samples and start == 0 and not eval_log.kept:
      summary["eval_initial"] = run_eval(state)
      eval_log.write(0, summary["eval_initial"])
    writer = MetricsWriter(workdir, start_step=start, tensorboard=jax.process_index() == 0)
    # timing.jsonl: wall seconds of each iteration without its evaluation (machine-dependent, so kept out
    # of metrics.jsonl, whose records a resumed run reproduces exactly).
    timing_log = MetricsWriter(workdir, start_step=start, filename="timing.jsonl", tensorboard=False)
    bar = tqdm(total=total, initial=start, desc="rl", unit="iter")

    def put(arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
      return shd.put_batch(arrays, mesh)

    with SigTermGuard() as sigterm:
      final = start
      for it in range(start, total):
        if budget and spent >= budget:
          break
        it_key, params_now = jax.random.fold_in(rollout_key, it), policy_params(state)
        t_iter, sampled = time.perf_counter(), [0]
        tree = None
        if kind == "tree":  # TreeRL: one entropy-forked tree per prompt, its leaves as rows
          idx = prompt_indices(cursor, B, len(train_prompts.problems), rl_seed)
          cursor += B
          rollout, tree = tree_rollout.sample_tree_rollout(
            sampler, params_now, train_prompts.take(idx), G, jax.random.fold_in(it_key, 0), tokenizer,
            reward_cfg, **{k: int(v) for k, v in ro.tree.items()})
          real_B, drawn, row_valid_R = np.ones(B, bool), {"first": rollout, "rounds": 1}, tree.row_valid_R
          drawn["groups_kept_frac"], sampled[0] = 1.0, tree.sampled_tokens
        else:
          # --- rollout, with DAPO dynamic sampling (drop groups whose samples all score the same; refill)
          def draw(round_: int, it_key=it_key, params=params_now, sampled=sampled):
            nonlocal cursor
            idx = prompt_indices(cursor, B, len(train_prompts.problems), rl_seed)
            cursor += B
            out = sample_groups(group_sampler, params, train_prompts.take(idx), G,
                                jax.random.fold_in(it_key, round_), tokenizer, reward_cfg)
            sampled[0] += int(out.lengths_R.sum())
            return out

          rollout, real_B, drawn = collect_groups(
            draw, B, dynamic=bool(config.dynamic_sampling.enabled),
            max_rounds=int(config.dynamic_sampling.max_rounds), metric=config.dynamic_sampling.metric)
          row_valid_R = np.ones(B * G, np.float32)
        if adv_cfg.name == "vineppo":  # K rollouts from each step boundary of every response
          mc_returns_RCK, mc_mask_RCK, mc_tokens = tree_rollout.mc_step_returns(
            sampler, params_now, group_sampler.state, rollout, jax.random.fold_in(it_key, 1_000_003),
            tokenizer, reward_cfg, boundary_ids=boundary_ids, rollouts=int(adv_cfg.mc_rollouts),
            max_steps=int(adv_cfg.mc_max_steps))
          sampled[0] += mc_tokens
        first = drawn["first"]
        first_w = row_valid_R if tree is not None else np.ones(len(first.rewards_R), np.float32)
        valid_R = np.repeat(real_B, G).astype(np.float32) * row_valid_R

        # --- old / reference log-probs, critic values, advantages
        arrays = put({"tokens": rollout.tokens_RS, "mask": rollout.mask_RS.astype(np.int32)})
        cmask_RN = rollout.completion_mask_RN.astype(np.float32) * valid_R[:, None]
        if adv_cfg.name == "rft":
          keep_R = batch_lib.rft_keep(rollout.correct_R, float(config.rft.threshold))
          cmask_RN = cmask_RN * keep_R[:, None]
        if ro.old_logprobs == "recompute":
          old_logp_RN = np.asarray(completion_logprobs_jit(
            policy_graphdef, policy_params(state), arrays["tokens"], arrays["mask"], num_new=N,
            temperature=temperature))
        elif ro.old_logprobs == "sampler":
          old_logp_RN = rollout.sampler_logp_RN
        else:
          raise ValueError(f"rollout.old_logprobs must be 'sampler' or 'recompute', got {ro.old_logprobs!r}")
        batch = {"tokens": rollout.tokens_RS, "mask": rollout.mask_RS.astype(np.int32),
                 "completion_mask": cmask_RN, "old_logp": old_logp_RN.astype(np.float32)}
        kl_RN, kl_coef = None, float(config.kl.coef)
        if kl_coef > 0:
          ref_logp_RN = np.asarray(completion_logprobs_jit(
            policy_graphdef, ref_params, arrays["tokens"], arrays["mask"], num_new=N,
            temperature=temperature))
          if config.kl.where == "loss":
            batch["ref_logp"] = ref_logp_RN
          else:
            kl_RN = batch_lib.token_kl(old_logp_RN, ref_logp_RN, cmask_RN, config.kl.kind)
        rewards_R = rollout.rewards_R
        if adv_cfg.unlikeliness_rank_penalty > 0:  # He et al. 2025: rank-penalise likely correct samples
          seq_logp_R = (old_logp_RN * cmask_RN).sum(1) / np.maximum(cmask_RN.sum(1), 1.0)
          rewards_R = np.asarray(unlikeliness_rewards(
            rewards_R.reshape(B, G), seq_logp_R.reshape(B, G), mask_BG=valid_R.reshape(B, G),
            rank_penalty=float(adv_cfg.unlikeliness_rank_penalty))).reshape(-1)
        completion_RN = rollout.tokens_RS[:, -N:]
        if adv_cfg.name == "rft":
          adv_RN = cmask_RN.copy()
        elif adv_cfg.name == "treerl":
          adv_RN = batch_lib.treerl_token_advantages(
            tree.parent_BM, tree.valid_BM, tree.leaf_node_R, tree.node_RN, rewards_R, valid_R, G,
            global_weight=float(adv_cfg.global_weight), local_weight=float(adv_cfg.local_weight),
            weighting=adv_cfg.tree_weighting, leaf_baseline=adv_cfg.tree_leaf_baseline) * cmask_RN
        elif adv_cfg.name == "vineppo":
          adv_RN = batch_lib.vineppo_token_advantages(
            completion_RN, cmask_RN, rewards_R, valid_R, mc_returns_RCK, mc_mask_RCK,
            boundary_ids=boundary_ids, gamma=float(adv_cfg.gamma))
        else:
          values_RN = None
          if use_critic:
            values_RN = np.asarray(critic_values_jit(graphdef, state.params, arrays["tokens"], arrays["mask"],
                                                     num_new=N))
          adv_RN, returns_RN = batch_lib.compute_advantages(
            adv_cfg.name, rewards_R, cmask_RN, G, group_valid_R=valid_R, kl_RN=kl_RN,
            kl_coef=kl_coef if config.kl.where == "reward" else 0.0, values_RN=values_RN,
            gamma=float(adv_cfg.gamma), lam=float(adv_cfg.lam), whiten=bool(adv_cfg.whiten),
            positive_weight=float(adv_cfg.positive_weight), negative_weight=float(adv_cfg.negative_weight),
            grpo_eps=float(adv_cfg.eps), tokens_RN=completion_RN, td_weight=float(adv_cfg.td_weight),
            root_td=bool(adv_cfg.root_td))
          if use_critic:
            batch["returns"], batch["old_values"] = returns_RN, values_RN * cmask_RN
        batch["advantages"] = adv_RN

        # --- epochs of minibatch updates through the one train step
        records = []
        order_rng = np.random.default_rng([rl_seed, it])
        for _ in range(int(config.train.epochs)):
          for rows in batch_lib.minibatches(B * G, int(config.train.minibatch_size), order_rng):
            if cmask_RN[rows].sum() == 0:
              continue  # nothing to learn from (e.g. RFT with no correct sample): no optimizer step
            state, m = train_step(state, put({k: v[rows] for k, v in batch.items()}))
            records.append(m)
        metrics = _mean_metrics(records) or {"loss": 0.0}
        streak = int(jax.device_get(state.nonfinite_streak))
        if streak >= config.max_nonfinite_streak:
          cause = int(jax.device_get(records[-1]["nonfinite_cause"])) if records else 0
          raise step_lib.NonFiniteError(f"iteration {it + 1}: " + step_lib.nonfinite_message(
            streak, cause, int(jax.device_get(state.step)), config.optimizer.lr))
        mean = lambda x, w=first_w: float(np.average(np.asarray(x, np.float64), weights=w))
        metrics.update(
          updates=len(records), reward_mean=mean(first.rewards_R),
          train_accuracy=mean(first.correct_R), format_rate=mean(first.format_R),
          response_len=mean(first.lengths_R), truncated_frac=mean(first.truncated_R),
          groups_kept_frac=drawn["groups_kept_frac"], sample_rounds=drawn["rounds"],
          batch_groups_real=int(real_B.sum()),
          trained_rows=int((cmask_RN.sum(axis=1) > 0).sum()), prompt_cursor=cursor, sampled_tokens=sampled[0],
          **{f"reward_{k}": mean(v) for k, v in first.reward_terms.items()},  # each reward term on its own
        )
        if first.credit_R is not None:
          metrics["partial_credit"] = mean(first.credit_R)
        s = final = it + 1
        spent += sampled[0]
        metrics["sampled_tokens_total"] = spent
        stop = bool(budget and spent >= budget)
        timing_log.write(s, {"iter_s": time.perf_counter() - t_iter, "sampled_tokens": sampled[0]})
        if ev_cfg.samples and (s == total or stop or (ev_cfg.every_steps and s % ev_cfg.every_steps == 0)):
          ev = run_eval(state)
          eval_log.write(s, ev)
          summary["eval"] = ev
          metrics.update({f"eval_{k}": v for k, v in ev.items()})
        summary["last"] = writer.write(s, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['train_accuracy']:.2f}")
        if streak and (s % config.checkpoint_every_steps == 0 or s == total or stop or sigterm.received):
          logging.warning("iteration %d: no checkpoint while %d updates in a row were non-finite", s, streak)
        elif s % config.checkpoint_every_steps == 0 or s == total or stop or sigterm.received:
          ckpt.save(s, state, data_state={"iteration": s, "prompt_cursor": cursor, "sampled_tokens": spent},
                    config=json.loads(config.to_json_best_effort()),
                    force=sigterm.received or s == total or stop)
        if sigterm.received:
          ckpt.wait()
          writer.close()
          timing_log.close()
          eval_log.close()
          bar.close()
          raise Preempted()
        if stop:
          break
    ckpt.wait()
    ckpt.close()
    writer.close()
    timing_log.close()
    eval_log.close()
    bar.close()
  summary.update(final_step=final, wall_s=time.perf_counter() - t0, state=state)
  return summary
