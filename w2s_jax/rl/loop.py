"""The RL loop with verifiable rewards: rollout → advantages → epochs of minibatch updates → repeat.

One iteration (a logged `step`): take the next B prompts of the train split, draw G samples each, score
them with the task's verifier (+ format / overlong terms), optionally drop zero-variance groups and refill
from further prompts (DAPO dynamic sampling), compute old-policy log-probs (the sampler's or recomputed),
reference log-probs and critic values when needed, advantages by name, then `train.epochs` passes of
random minibatches through the one train step (`make_train_step` with `rl_objective`). The policy starts
from the SFT phase (`w2s_jax.rl.sft_init`), which is also the frozen reference model of the KL penalty.
Each group's prompt runs once (`models.shared_prefix`) in the old/reference log-prob passes and in every
update whose minibatch is made of whole groups (`shared_prompt`, default on; `train.group_minibatches`
draws such minibatches, off by default: rows are shuffled one by one, as before).

Tree estimators (`w2s_jax.rl.tree_rollout`): `rollout.kind = "tree"` draws TreeRL's entropy-forked trees
instead of G independent samples (rows = leaves, advantage `treerl`); advantage `vineppo` adds K Monte
Carlo rollouts from every step boundary of each sampled response; `tempo` needs only the ordinary group.
Every record counts `sampled_tokens` (all tokens generated that iteration, Monte Carlo rollouts included).

Workdir: `config.json`, `metrics.jsonl` (one record per iteration: `step`, `loss`, rollout and update
statistics, `eval_*` at evaluations), `eval.jsonl` (every evaluation, step 0 included), `timing.jsonl`
(wall seconds of each iteration, evaluation excluded), TensorBoard
events, `checkpoints/` (train state + {iteration, prompt cursor}), `sft/` (the SFT phase). Rerunning
the same command resumes; everything random is keyed by (seed, iteration), so the resumed run's metrics
equal the uninterrupted run's. The mesh, optimizer, checkpointer, writers, SIGTERM and non-finite guards
and the evaluation cadence are the one runtime's (`w2s_jax.train.runtime`); which inputs an estimator
needs (a critic, a tree, Monte Carlo returns, a kept-rows filter) is read from `ADVANTAGES[name].needs`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from w2s_jax import sharding as shd
from w2s_jax.advantages.registry import ADVANTAGES
from w2s_jax.config_files import start_workdir
from w2s_jax.data.chat import resolve_template
from w2s_jax.data.limits import check_model_length
from w2s_jax.data.sft_sources import problems_from_config
from w2s_jax.losses.policy import unlikeliness_rewards
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.references import resolve_reference
from w2s_jax.rewards.learned import make_reward_config
from w2s_jax.rl import batch as batch_lib
from w2s_jax.rl import objective as objective_lib
from w2s_jax.rl import tree_rollout
from w2s_jax.rl.evaluate import evaluate
from w2s_jax.rl.objective import ActorCritic, completion_logprobs_jit, critic_values_jit, rl_objective
from w2s_jax.rl.rollout import PromptSet, RewardConfig, collect_groups, encode_prompts, sample_groups
from w2s_jax.rl.sft_init import run_sft
from w2s_jax.sampling.compact import MIN_ROWS
from w2s_jax.sampling.sampler import Sampler, SamplingConfig
from w2s_jax.train import step as step_lib
from w2s_jax.train.runtime import Evaluator, Runtime, Update, full_params
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
    loss_kind=loss.name, reduction=loss.reduction, clip_eps=_none_if_zero(loss.clip_eps),
    clip_eps_high=_none_if_zero(loss.clip_eps_high), dual_clip_c=_none_if_zero(loss.dual_clip_c),
    topr_level=loss.topr_level, use_is_ratio=bool(loss.use_is_ratio),
    positive_weight=float(loss.positive_weight), negative_weight=float(loss.negative_weight),
    kl_coef=float(kl.coef) if kl.where == "loss" else 0.0, kl_kind=kl.kind,
    temperature=float(config.rollout.temperature),
    value_coef=float(loss.value_coef) if "values" in ADVANTAGES[config.advantage.name].needs else 0.0,
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
  ro, name = config.rollout, config.advantage.name
  needs = ADVANTAGES[name].needs
  if "values" in needs and config.loss.value_coef <= 0:
    raise ValueError(f"advantage {name!r} trains a critic: set loss.value_coef > 0")
  if "keep" in needs and config.loss.name != "reinforce":
    raise ValueError(f"advantage {name!r} (rejection-sampling SFT) needs loss.name='reinforce'")
  kind = ro.get("kind", "group")
  if kind not in ("group", "tree"):
    raise ValueError(f"rollout.kind must be 'group' or 'tree', got {kind!r}")
  if (kind == "tree") != ("tree" in needs):
    raise ValueError(f"advantage 'treerl' and rollout.kind='tree' go together (got {name!r}, {kind!r})")
  if kind == "tree":
    t = ro.tree
    leaves, _ = tree_rollout.tree_size(t.n_roots, t.n_iters, t.top_n, t.n_forks)
    if min(t.n_roots, t.n_forks) < 1 or min(t.n_iters, t.top_n) < 0 or ro.group_size != leaves:
      raise ValueError(f"rollout.group_size={ro.group_size} must equal the tree's leaves n_roots + "
                       f"n_iters·top_n·n_forks = {leaves} (rollout.tree; n_roots, n_forks >= 1)")
  if {"tree", "mc_returns"} & set(needs):
    if config.dynamic_sampling.enabled:
      raise ValueError(f"advantage {name!r} does not support dynamic_sampling.enabled")
    if config.kl.coef > 0 and config.kl.where == "reward":
      raise ValueError(f"advantage {name!r} takes the KL in the loss: set kl.where='loss'")
  if "mc_returns" in needs and (config.advantage.mc_rollouts < 1 or config.advantage.mc_max_steps < 1
                                or not config.advantage.step_boundary):
    raise ValueError(f"{name} needs advantage.mc_rollouts >= 1, advantage.mc_max_steps >= 1 and a "
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


def make_reward(
  config: ml_collections.ConfigDict, reward_fn: Callable[[Sequence[Any], Sequence[str]], np.ndarray] | None
) -> RewardConfig:
  """The rollouts' reward (`config.reward` + an optional learned `reward_fn`), checked before any work."""
  reward_cfg = make_reward_config(config.reward, learned=reward_fn)  # loads learned terms' runs
  if reward_cfg.learned_coef and reward_fn is None:
    raise ValueError("reward.learned_coef > 0 but train_rl got no reward_fn (a learned reward is passed "
                     "in code: train_rl(config, workdir, reward_fn=...))")
  if reward_cfg.custom:
    resolve_reference(reward_cfg.custom, "reward.custom")  # fails here, not after the SFT phase
  return reward_cfg


def _encode_splits(config: ml_collections.ConfigDict, tokenizer) -> tuple[PromptSet, PromptSet]:
  """Train and eval prompts; a too-long prompt stops the run here (data.long_prompts: error | skip)."""
  d = config.data
  on_long, template = d.get("long_prompts", "error"), resolve_template(d.get("chat_template", ""), tokenizer)
  train, evals = (encode_prompts(problems_from_config(d, split), tokenizer, d.max_prompt_len, on_long=on_long,
                                 chat_template=template) for split in ("train", "eval"))
  max_seq_len = from_section(config.model).max_seq_len
  check_model_length(int(d.max_prompt_len) + int(config.rollout.max_new_tokens), max_seq_len,
                     "prompts + completions (data.max_prompt_len + rollout.max_new_tokens)")
  check_model_length(int(config.sft.seq_len), max_seq_len, "SFT rows (sft.seq_len)")
  return train, evals


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
  validate(config)
  workdir = start_workdir(config, workdir)
  tokenizer = make_tokenizer(config.data.tokenizer)
  train_prompts, eval_prompts = _encode_splits(config, tokenizer)
  reward_cfg = make_reward(config, reward_fn)
  sft_params, sft_summary = run_sft(config, workdir)  # the base model's SFT, never LoRA (`sft_config`)
  ro = config.rollout
  updates = int(config.train.epochs) * (int(ro.prompts_per_step) * int(ro.group_size)
                                        // int(config.train.minibatch_size))
  rt = Runtime(config, workdir, total_steps=int(config.total_steps),
               total_updates=int(config.total_steps) * updates, desc="rl")
  with rt:
    run = _RLRun(config, rt, tokenizer, train_prompts, reward_cfg, sft_params)
    state = rt.init_or_restore(params=run.start_params)
    run.cursor = int(rt.data_state.get("prompt_cursor", 0))
    run.spent = int(rt.data_state.get("sampled_tokens", 0))
    ev = config.eval
    evaluator = Evaluator(
      lambda s: evaluate(run.sampler, run.policy(s), eval_prompts, int(ev.samples), list(ev.ks),
                         jax.random.fold_in(jax.random.key(config.seed), 1_000_003), tokenizer,
                         chunk_prompts=max(run.B * run.G // int(ev.samples), 1)),
      every=int(config.eval_every_steps or 0), at_start=True, prefix="eval_") if ev.samples else None
    state = rt.run(state, run.iteration, evaluator=evaluator, until=run.spent_budget)
  return {"sft": sft_summary, **rt.summary, "wall_s": rt.wall_s, "state": state}


class _RLRun:
  """One RL run's models, sampler and data position; `iteration` is the runtime's step function."""

  def __init__(self, config: ml_collections.ConfigDict, rt: Runtime, tokenizer, prompts: PromptSet,
               reward_cfg: RewardConfig, sft_params: Any):
    self.config, self.rt, self.tokenizer, self.prompts = config, rt, tokenizer, prompts
    self.reward_cfg = reward_cfg
    ro, self.adv = config.rollout, config.advantage
    self.needs = ADVANTAGES[self.adv.name].needs
    self.B, self.G, self.N = int(ro.prompts_per_step), int(ro.group_size), int(ro.max_new_tokens)
    self.temperature, self.critic = float(ro.temperature), "values" in self.needs
    model_cfg = from_section(config.model)
    self.make_model = (lambda rngs: ActorCritic(model_cfg, rngs=rngs)) if self.critic else (
      lambda rngs: Transformer(model_cfg, rngs=rngs))
    if rt.lora is not None and self.critic:
      raise ValueError(f"model.lora with advantage.name={self.adv.name!r}: LoRA adapts one decoder, an "
                       "actor-critic has two; use an estimator without a critic or model.lora.rank=0")
    self.sft_params = sft_params
    self.graphdef = rt.model(self.make_model, params=self.start_params)  # adapters only under model.lora
    abstract = nnx.eval_shape(lambda: self.make_model(nnx.Rngs(config.seed)))
    self.policy_graphdef = nnx.split(abstract.policy)[0] if self.critic else self.graphdef
    if rt.lora is None:
      self.ref_params = jax.device_put(sft_params, self.policy(rt.shardings))
    else:  # the SFT policy read through zero adapters (B = 0: W + 0 is W, bit for bit)
      self.ref_params = full_params(rt.fresh(params=self.start_params))
    self.train_step = rt.train_step(make_objective(config), self.graphdef)
    self.sampler = Sampler(self.policy_graphdef, SamplingConfig(
      max_new_tokens=self.N, temperature=self.temperature, top_p=_none_if_zero(ro.top_p),
      stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id), mesh=rt.mesh, rules=rt.rules,
      compact_min_rows=int(ro.get("compact_min_rows", MIN_ROWS)))
    # Estimators with Monte Carlo step returns fork the finished rows of each draw: keep the draw's state.
    self.group_sampler = (tree_rollout.KeepStateSampler(self.sampler) if "mc_returns" in self.needs
                          else self.sampler)
    self.boundary_ids = tuple(tokenizer.encode(self.adv.get("step_boundary", "\n")))
    # rl_seed (>= 0) varies the RL draws, prompt order and minibatches but not the model, SFT or evaluation.
    rl_seed = int(config.get("rl_seed", -1))
    self.rl_seed = int(config.seed) if rl_seed < 0 else rl_seed
    self.budget = int(config.get("sample_budget", 0))  # stop once this many tokens were sampled (0 = off)
    self.cursor = self.spent = 0
    # shared_prompt: run each group's prompt once in the log-prob passes and the updates (exact)
    self.shared = bool(config.get("shared_prompt", True))
    self.group_minibatches = bool(config.train.get("group_minibatches", False))
    self.batch_shards = int(np.prod([rt.mesh.shape.get(a, 1) for a in shd.BATCH_AXES]))

  def start_params(self) -> Any:
    """The SFT policy (and, with a critic, the critic's backbone too)."""
    if not self.critic:
      return self.sft_params
    _, params = nnx.split(self.make_model(nnx.Rngs(self.config.seed)))
    params["policy"] = self.sft_params
    params["critic"]["backbone"] = self.sft_params
    return params

  def policy(self, state) -> Any:
    """The policy's part of a state's params (or of its shardings)."""
    return state.params["policy"] if self.critic else full_params(state)

  def spent_budget(self) -> bool:
    return bool(self.budget and self.spent >= self.budget)

  def _next_prompts(self, count: int) -> PromptSet:
    idx = prompt_indices(self.cursor, count, len(self.prompts.problems), self.rl_seed)
    self.cursor += count
    return self.prompts.take(idx)

  def rollout(self, it_key: jax.Array, params: Any) -> dict[str, Any]:
    """One iteration's samples: a tree per prompt (TreeRL) or G samples per prompt (with DAPO refills)."""
    B, G, ro = self.B, self.G, self.config.rollout
    out: dict[str, Any] = {"tree": None, "sampled": 0}
    if "tree" in self.needs:  # TreeRL: one entropy-forked tree per prompt, its leaves as rows
      out["rollout"], tree = tree_rollout.sample_tree_rollout(
        self.sampler, params, self._next_prompts(B), G, jax.random.fold_in(it_key, 0), self.tokenizer,
        self.reward_cfg, **{k: int(v) for k, v in ro.tree.items()})
      drawn = {"first": out["rollout"], "rounds": 1, "groups_kept_frac": 1.0}
      out.update(tree=tree, real_B=np.ones(B, bool), row_valid_R=tree.row_valid_R,
                 sampled=tree.sampled_tokens, drawn=drawn)
    else:  # DAPO dynamic sampling: drop groups whose samples all score the same, refill
      def draw(round_: int) -> Any:
        groups = sample_groups(self.group_sampler, params, self._next_prompts(B), G,
                               jax.random.fold_in(it_key, round_), self.tokenizer, self.reward_cfg)
        out["sampled"] += int(groups.lengths_R.sum())
        return groups

      ds = self.config.dynamic_sampling
      out["rollout"], out["real_B"], out["drawn"] = collect_groups(
        draw, B, dynamic=bool(ds.enabled), max_rounds=int(ds.max_rounds), metric=ds.metric)
      out["row_valid_R"] = np.ones(B * G, np.float32)
    if "mc_returns" in self.needs:  # K rollouts from each step boundary of every response
      mc_returns_RCK, mc_mask_RCK, mc_tokens = tree_rollout.mc_step_returns(
        self.sampler, params, self.group_sampler.state, out["rollout"], jax.random.fold_in(it_key, 1_000_003),
        self.tokenizer, self.reward_cfg, boundary_ids=self.boundary_ids, rollouts=int(self.adv.mc_rollouts),
        max_steps=int(self.adv.mc_max_steps))
      out["mc"], out["sampled"] = (mc_returns_RCK, mc_mask_RCK), out["sampled"] + mc_tokens
    return out

  def _logprobs(self, params: Any, arrays: dict[str, jax.Array], grouped: bool) -> np.ndarray:
    group = self.G if grouped and (self.B % self.batch_shards == 0) else 1
    return np.asarray(completion_logprobs_jit(self.policy_graphdef, params, arrays["tokens"], arrays["mask"],
                                              num_new=self.N, temperature=self.temperature, group_size=group))

  def _minibatch(self, batch: dict[str, np.ndarray], rows: np.ndarray, grouped: bool) -> dict[str, jax.Array]:
    """The rows' update batch on the mesh; whole groups (rows sorted) of a rollout whose groups share their
    prompt slots (`grouped`) go in the grouped layout [U, G, ...] of `rl_objective`, whose prompts run once;
    any other selection keeps the row layout [M, ...]."""
    G, srt = self.G, np.sort(rows)
    if grouped and len(rows) % G == 0 and (len(rows) // G) % self.batch_shards == 0:
      first = srt[::G]
      if ((first % G == 0) & (srt.reshape(-1, G) == first[:, None] + np.arange(G)).all(axis=1)).all():
        groups = {k: v[srt].reshape(-1, G, *v.shape[1:]) for k, v in batch.items()}
        return shd.put_batch(groups, self.rt.mesh)
    return shd.put_batch({k: v[rows] for k, v in batch.items()}, self.rt.mesh)

  def build_batch(self, state, out: dict[str, Any], valid_R: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], bool]:
    """Old / reference log-probs, critic values and advantages of a rollout: the updates' batch, and whether
    its groups share their prompt slots (then the passes over whole groups run each prompt once)."""
    config, rollout, adv = self.config, out["rollout"], self.adv
    grouped = self.shared and objective_lib.groups_share_prompt(
      rollout.tokens_RS, rollout.mask_RS, self.N, self.G)
    arrays = shd.put_batch({"tokens": rollout.tokens_RS, "mask": rollout.mask_RS.astype(np.int32)},
                           self.rt.mesh)
    cmask_RN = rollout.completion_mask_RN.astype(np.float32) * valid_R[:, None]
    if "keep" in self.needs:
      cmask_RN = cmask_RN * batch_lib.rft_keep(rollout.correct_R, float(config.rft.threshold))[:, None]
    old_logprobs = config.rollout.old_logprobs
    if old_logprobs == "recompute":
      old_logp_RN = self._logprobs(self.policy(state), arrays, grouped)
    elif old_logprobs == "sampler":
      old_logp_RN = rollout.sampler_logp_RN
    else:
      raise ValueError(f"rollout.old_logprobs must be 'sampler' or 'recompute', got {old_logprobs!r}")
    batch = {"tokens": rollout.tokens_RS, "mask": rollout.mask_RS.astype(np.int32),
             "completion_mask": cmask_RN, "old_logp": old_logp_RN.astype(np.float32)}
    kl_RN = None
    if float(config.kl.coef) > 0:
      ref_logp_RN = self._logprobs(self.ref_params, arrays, grouped)
      if config.kl.where == "loss":
        batch["ref_logp"] = ref_logp_RN
      else:
        kl_RN = batch_lib.token_kl(old_logp_RN, ref_logp_RN, cmask_RN, config.kl.kind)
    rewards_R = rollout.rewards_R
    if adv.unlikeliness_rank_penalty > 0:  # He et al. 2025: rank-penalise likely correct samples
      B, G = self.B, self.G
      seq_logp_R = (old_logp_RN * cmask_RN).sum(1) / np.maximum(cmask_RN.sum(1), 1.0)
      rewards_R = np.asarray(unlikeliness_rewards(
        rewards_R.reshape(B, G), seq_logp_R.reshape(B, G), mask_BG=valid_R.reshape(B, G),
        rank_penalty=float(adv.unlikeliness_rank_penalty))).reshape(-1)
    batch["advantages"] = self._advantages(state, out, batch, arrays, rewards_R, valid_R, kl_RN)
    return batch, grouped

  def _advantages(self, state, out, batch, arrays, rewards_R, valid_R, kl_RN) -> np.ndarray:
    """Per-token advantages by `ADVANTAGES[advantage.name].needs`; a critic's targets join `batch`."""
    adv, cmask_RN, needs = self.adv, batch["completion_mask"], self.needs
    completion_RN = out["rollout"].tokens_RS[:, -self.N:]
    if "keep" in needs:
      return cmask_RN.copy()
    if "tree" in needs:
      t = out["tree"]
      return batch_lib.treerl_token_advantages(
        t.parent_BM, t.valid_BM, t.leaf_node_R, t.node_RN, rewards_R, valid_R, self.G,
        global_weight=float(adv.global_weight), local_weight=float(adv.local_weight),
        weighting=adv.tree_weighting, leaf_baseline=adv.tree_leaf_baseline) * cmask_RN
    if "mc_returns" in needs:
      return batch_lib.vineppo_token_advantages(
        completion_RN, cmask_RN, rewards_R, valid_R, *out["mc"], boundary_ids=self.boundary_ids,
        gamma=float(adv.gamma))
    values_RN = None
    if self.critic:
      values_RN = np.asarray(critic_values_jit(self.graphdef, state.params, arrays["tokens"], arrays["mask"],
                                               num_new=self.N))
    kl = self.config.kl
    adv_RN, returns_RN = batch_lib.compute_advantages(
      adv.name, rewards_R, cmask_RN, self.G, group_valid_R=valid_R, kl_RN=kl_RN,
      kl_coef=float(kl.coef) if kl.where == "reward" else 0.0, values_RN=values_RN,
      gamma=float(adv.gamma), lam=float(adv.lam), whiten=bool(adv.whiten),
      positive_weight=float(adv.positive_weight), negative_weight=float(adv.negative_weight),
      grpo_eps=float(adv.eps), tokens_RN=completion_RN, td_weight=float(adv.td_weight),
      root_td=bool(adv.root_td))
    if self.critic:
      batch["returns"], batch["old_values"] = returns_RN, values_RN * cmask_RN
    return adv_RN

  def iteration(self, state, it: int) -> tuple[Any, Update]:
    """Rollout → batch → `train.epochs` passes of minibatch updates; the runtime's step function."""
    it_key = jax.random.fold_in(jax.random.key(self.rl_seed), it)
    out = self.rollout(it_key, self.policy(state))
    valid_R = np.repeat(out["real_B"], self.G).astype(np.float32) * out["row_valid_R"]
    batch, grouped = self.build_batch(state, out, valid_R)
    cmask_RN, records = batch["completion_mask"], []
    order_rng = np.random.default_rng([self.rl_seed, it])
    draw = functools.partial(batch_lib.group_minibatches, group_size=self.G) if self.group_minibatches else (
      batch_lib.minibatches)
    for _ in range(int(self.config.train.epochs)):
      for rows in draw(self.B * self.G, int(self.config.train.minibatch_size), order_rng):
        if cmask_RN[rows].sum() == 0:
          continue  # nothing to learn from (e.g. RFT with no correct sample): no optimizer step
        state, m = self.train_step(state, self._minibatch(batch, rows, grouped))
        records.append(m)
    first = out["drawn"]["first"]
    first_w = out["row_valid_R"] if out["tree"] is not None else np.ones(len(first.rewards_R), np.float32)
    mean = lambda x: float(np.average(np.asarray(x, np.float64), weights=first_w))
    metrics = _mean_metrics(records) or {"loss": 0.0}
    metrics.update(
      updates=len(records), reward_mean=mean(first.rewards_R), train_accuracy=mean(first.correct_R),
      format_rate=mean(first.format_R), response_len=mean(first.lengths_R),
      truncated_frac=mean(first.truncated_R), groups_kept_frac=out["drawn"]["groups_kept_frac"],
      sample_rounds=out["drawn"]["rounds"], batch_groups_real=int(out["real_B"].sum()),
      trained_rows=int((cmask_RN.sum(axis=1) > 0).sum()), prompt_cursor=self.cursor,
      sampled_tokens=out["sampled"],
      **{f"reward_{k}": mean(v) for k, v in first.reward_terms.items()},  # each reward term on its own
    )
    if first.credit_R is not None:
      metrics["partial_credit"] = mean(first.credit_R)
    self.spent += out["sampled"]
    metrics["sampled_tokens_total"] = self.spent
    cause = records[-1]["nonfinite_cause"] if records else 0
    data_state = {"iteration": it + 1, "prompt_cursor": self.cursor, "sampled_tokens": self.spent}
    return state, Update(metrics, state.nonfinite_streak, cause, state.step, data_state,
                         timing={"sampled_tokens": out["sampled"]}, stop=self.spent_budget())
