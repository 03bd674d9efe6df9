"""`ADVANTAGES`: every advantage estimator by its config name (`advantage.name`), one signature for all.

An entry is an `Estimator`: the pure function that does the math (`fn`, in `group.py`, `gae.py` or
`tree.py`), the `feed` that turns a rollout's arrays into that function's inputs and its output into
per-token advantages, the `options` it reads, and the rollout inputs it `needs` beyond rewards and the
completion mask. Every entry is called the same way:

  ADVANTAGES[name](batch: RolloutAdvantageInputs, options: AdvantageOptions) -> (adv_RN, returns_RN)

Legend: B prompts, G samples per prompt, R = B·G rows (group-major), N completion slots, M tree nodes per
prompt (node 0 is the prompt), C steps with a Monte Carlo value per response, K rollouts per step.

KL in the reward (verl `use_kl_in_reward`, TRL RLOO): token-level estimators get r_t −= β·KL_t; the
sequence-level ones r_i −= β·Σ_t KL_{i,t} (TRL RLOO's sequence sum). Tree and MC estimators take the
rewards as given.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from w2s_jax.advantages.gae import gae_advantages, outcome_token_rewards
from w2s_jax.advantages.group import (
  broadcast_to_tokens,
  dr_grpo_advantages,
  grpo_advantages,
  reinforce_advantages,
  reinforce_pp_advantages,
  reinforce_pp_baseline_advantages,
  rloo_advantages,
  w_reinforce_advantages,
)
from w2s_jax.advantages.steps import step_ids
from w2s_jax.advantages.tree import (
  gather_to_tokens,
  mc_step_advantages,
  mc_step_values,
  tempo_advantages,
  treerl_advantages,
)

psr_advantages = functools.partial(w_reinforce_advantages, positive_weight=1.0, negative_weight=0.0)
nsr_advantages = functools.partial(w_reinforce_advantages, positive_weight=0.0, negative_weight=1.0)


class RolloutAdvantageInputs(NamedTuple):
  """A rollout's arrays, as estimators read them (a pytree; the optional fields are None when absent).

  Attributes:
    rewards_R: one reward per row [R].
    mask_RN: completion tokens [R, N] float.
    valid_R: rows that take part [R] float (padding groups 0).
    kl_RN: per-token KL of the sampling policy to the reference [R, N] (zeros without KL in the reward).
    kl_coef: β of the KL in the reward, a scalar.
    values_RN: the critic's V(s_t) [R, N] (`needs` "values"), or None.
    tokens_RN: completion token ids [R, N] int32 (`needs` "tokens"), or None.
    tree: (parent_BM, valid_BM, leaf_node_R, node_RN) of a forked rollout (`needs` "tree"), or None.
    mc_returns: (returns_RCK, rollout_mask_RCK) of K rollouts per step (`needs` "mc_returns"), or None.
  """

  rewards_R: jax.Array
  mask_RN: jax.Array
  valid_R: jax.Array
  kl_RN: jax.Array
  kl_coef: jax.Array
  values_RN: jax.Array | None = None
  tokens_RN: jax.Array | None = None
  tree: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None
  mc_returns: tuple[jax.Array, jax.Array] | None = None


class AdvantageOptions(NamedTuple):
  """Static settings (hashable, a jit static argument); each entry reads the ones in its `options`.

  Attributes:
    group_size: G, rows per prompt.
    gamma, lam, whiten: discount, GAE λ, batch whitening of GAE.
    positive_weight, negative_weight: λ₊, λ₋ of `w_reinforce`.
    grpo_eps: ε added to the group std (`grpo`, `tempo`).
    td_weight, root_td: `tempo_advantages`' TD coefficient and root-branch choice.
    global_weight, local_weight, weighting, leaf_baseline: `treerl_advantages`' settings.
    boundary_ids: token ids that end a step (`vineppo`).
  """

  group_size: int = 1
  gamma: float = 1.0
  lam: float = 0.95
  whiten: bool = True
  positive_weight: float = 0.1
  negative_weight: float = 1.0
  grpo_eps: float = 1e-6
  td_weight: float = 1.0
  root_td: bool = False
  global_weight: float = 1.0
  local_weight: float = 1.0
  weighting: str = "sqrt"
  leaf_baseline: str = "none"
  boundary_ids: tuple[int, ...] = ()


Feed = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Estimator:
  """An `ADVANTAGES` entry; `entry(batch, options) -> (adv_RN, returns_RN)` float32 [R, N].

  Attributes:
    name: the config name (`advantage.name`).
    fn: the pure estimator (None for `rft`, whose advantages are the kept tokens).
    feed: `feed(fn, batch, options, **keywords)`, the rollout → `fn` → per-token glue.
    options: (fn keyword, `AdvantageOptions` field) pairs passed to `fn`.
    needs: rollout inputs beyond rewards and mask: "values" (a critic), "tokens", "tree", "mc_returns",
      "keep" (the batch is filtered by `rl.batch.rft_keep`).
  """

  name: str
  fn: Callable[..., Any] | None
  feed: Feed
  options: tuple[tuple[str, str], ...] = ()
  needs: tuple[str, ...] = ()

  def __call__(self, batch: RolloutAdvantageInputs, options: AdvantageOptions) -> tuple[jax.Array, jax.Array]:
    keywords = {key: getattr(options, field) for key, field in self.options}
    return self.feed(self.fn, batch, options, **keywords)


def _token_mask(b: RolloutAdvantageInputs) -> jax.Array:
  return b.mask_RN * b.valid_R[:, None]


def _sequence_rewards(b: RolloutAdvantageInputs, token_mask_RN: jax.Array, group_size: int) -> jax.Array:
  """r_i − β·Σ_t KL_{i,t}, as [B, G]."""
  rewards_R = b.rewards_R - b.kl_coef * jnp.sum(b.kl_RN * token_mask_RN, axis=-1)
  return rewards_R.reshape(-1, group_size)


def per_response(fn: Callable[..., jax.Array], b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(rewards_BG, valid_BG, **kw) -> adv_BG`, spread over each response's tokens; returns are 0."""
  token_mask_RN = _token_mask(b)
  valid_BG = b.valid_R.reshape(-1, o.group_size)
  adv_BG = fn(_sequence_rewards(b, token_mask_RN, o.group_size), valid_BG, **kw)
  return broadcast_to_tokens(adv_BG, token_mask_RN), jnp.zeros_like(token_mask_RN)


def per_response_tokens(fn: Callable[..., jax.Array], b: RolloutAdvantageInputs, o: AdvantageOptions,
                        **kw: Any):
  """`fn(rewards_BG, token_mask_RN, valid_BG) -> adv_RN` (batch-whitened); returns are 0."""
  token_mask_RN = _token_mask(b)
  valid_BG = b.valid_R.reshape(-1, o.group_size)
  adv_RN = fn(_sequence_rewards(b, token_mask_RN, o.group_size), token_mask_RN, valid_BG, **kw)
  return adv_RN, jnp.zeros_like(token_mask_RN)


def token_rewards(fn: Feed, b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(token_rewards_RN, token_mask_RN, **kw) -> (adv_RN, returns_RN)`, outcome on the last token."""
  token_mask_RN = _token_mask(b)
  rewards_RN = outcome_token_rewards(b.rewards_R, token_mask_RN, b.kl_RN, kl_coef=b.kl_coef)
  return fn(rewards_RN, token_mask_RN, **kw)


def token_rewards_and_values(fn: Feed, b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(token_rewards_RN, values_RN, token_mask_RN, **kw) -> (adv_RN, returns_RN)` (the critic's)."""
  token_mask_RN = _token_mask(b)
  rewards_RN = outcome_token_rewards(b.rewards_R, token_mask_RN, b.kl_RN, kl_coef=b.kl_coef)
  return fn(rewards_RN, b.values_RN, token_mask_RN, **kw)


def prefix_tree(fn: Callable[..., jax.Array], b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(tokens_GL, mask_GL, rewards_G, **kw) -> adv_GL` on each prompt's group (`jax.vmap`)."""
  token_mask_RN = _token_mask(b)
  R, N = token_mask_RN.shape
  B, G = R // o.group_size, o.group_size
  rewards_BG = _sequence_rewards(b, token_mask_RN, G)
  adv_BGN = jax.vmap(functools.partial(fn, **kw))(
    b.tokens_RN.reshape(B, G, N), token_mask_RN.reshape(B, G, N), rewards_BG)
  return adv_BGN.reshape(R, N), jnp.zeros_like(token_mask_RN)


def forked_tree(fn: Callable[..., jax.Array], b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(parent_M, reward_M, is_leaf_N=, valid_N=, **kw) -> adv_M` per prompt's tree, gathered to tokens.

  Rows are the leaves (group-major); a leaf's reward sits on its node; padding rows (leaf −1 or invalid)
  are dropped and get 0. Every tree is rooted at node 0, the prompt, so V(root) is the mean outcome of
  all its leaves.
  """
  parent_BM, valid_BM, leaf_node_R, node_RN = b.tree
  B, M = parent_BM.shape
  R = leaf_node_R.shape[0]
  live_R = (b.valid_R > 0) & (leaf_node_R >= 0)
  prompt_R = jnp.arange(R) // o.group_size
  slot_R = jnp.where(live_R, leaf_node_R, M)  # M: dropped
  reward_BM = jnp.zeros((B, M), jnp.float32).at[prompt_R, slot_R].set(b.rewards_R, mode="drop")
  is_leaf_BM = jnp.zeros((B, M), bool).at[prompt_R, slot_R].set(True, mode="drop")
  tree = functools.partial(fn, **kw)
  adv_BM = jax.vmap(lambda p, r, leaf, v: tree(p, r, is_leaf_N=leaf, valid_N=v))(
    parent_BM, reward_BM, is_leaf_BM, valid_BM)
  adv_RM = jnp.repeat(adv_BM, o.group_size, axis=0)
  adv_RN = gather_to_tokens(adv_RM, jnp.where(live_R[:, None], node_RN, -1))
  return adv_RN, jnp.zeros(adv_RN.shape, jnp.float32)


def mc_steps(fn: Feed, b: RolloutAdvantageInputs, o: AdvantageOptions, **kw: Any):
  """`fn(values_RS, step_rewards_RS, known_S=, step_mask_S=, **kw) -> (adv_RS, _)` on the steps split at
  `o.boundary_ids`, with V̂ the mean of the K Monte Carlo returns (`mc_step_values`), gathered to tokens.

  The outcome is the reward of the last step; steps without rollouts (i ≥ C) have unknown values.
  """
  returns_RCK, rollout_mask_RCK = b.mc_returns
  R, N = b.mask_RN.shape
  C = returns_RCK.shape[1]
  mask_RN = b.mask_RN.astype(bool) & (b.valid_R[:, None] > 0)
  step_RN = step_ids(b.tokens_RN, mask_RN, boundary_ids=o.boundary_ids)
  n_steps_R = jnp.max(step_RN, axis=-1) + 1  # 0 for an empty row
  s_S = jnp.arange(N)  # at most N steps
  step_mask_RS = s_S[None] < n_steps_R[:, None]
  mc_RC = mc_step_values(returns_RCK, rollout_mask_RCK)
  has_RC = jnp.sum(rollout_mask_RCK, axis=-1) > 0
  values_RS = jnp.zeros((R, N), jnp.float32).at[:, :C].set(mc_RC[:, :N])
  known_RS = jnp.zeros((R, N), bool).at[:, :C].set(has_RC[:, :N]) & step_mask_RS
  step_rewards_RS = jnp.where(s_S[None] == n_steps_R[:, None] - 1, b.rewards_R[:, None], 0.0)
  adv_RS, _ = fn(values_RS, step_rewards_RS, known_S=known_RS, step_mask_S=step_mask_RS, **kw)
  adv_RN = gather_to_tokens(adv_RS, step_RN)
  return adv_RN, jnp.zeros(adv_RN.shape, jnp.float32)


def kept_tokens(fn: None, b: RolloutAdvantageInputs, o: AdvantageOptions):
  """Rejection-sampling SFT (RAFT, STaR): A = 1 on the tokens of kept rows (the mask holds `rft_keep`)."""
  token_mask_RN = _token_mask(b)
  return token_mask_RN, jnp.zeros_like(token_mask_RN)


_W = (("positive_weight", "positive_weight"), ("negative_weight", "negative_weight"))
_TREERL = (("global_weight", "global_weight"), ("local_weight", "local_weight"), ("weighting", "weighting"),
           ("leaf_baseline", "leaf_baseline"))

ADVANTAGES: dict[str, Estimator] = {e.name: e for e in (
  Estimator("grpo", grpo_advantages, per_response, (("eps", "grpo_eps"),)),
  Estimator("dr_grpo", dr_grpo_advantages, per_response),
  Estimator("rloo", rloo_advantages, per_response),
  Estimator("reinforce", reinforce_advantages, per_response),
  Estimator("psr", psr_advantages, per_response),
  Estimator("nsr", nsr_advantages, per_response),
  Estimator("w_reinforce", w_reinforce_advantages, per_response, _W),
  Estimator("reinforce_pp", reinforce_pp_advantages, token_rewards, (("gamma", "gamma"),)),
  Estimator("reinforce_pp_baseline", reinforce_pp_baseline_advantages, per_response_tokens),
  Estimator("gae", gae_advantages, token_rewards_and_values,
            (("gamma", "gamma"), ("lam", "lam"), ("whiten", "whiten")), needs=("values",)),
  Estimator("tempo", tempo_advantages, prefix_tree,
            (("td_weight", "td_weight"), ("root_td", "root_td"), ("eps", "grpo_eps")), needs=("tokens",)),
  Estimator("treerl", treerl_advantages, forked_tree, _TREERL, needs=("tree",)),
  Estimator("vineppo", mc_step_advantages, mc_steps, (("gamma", "gamma"),), needs=("tokens", "mc_returns")),
  Estimator("rft", None, kept_tokens, needs=("keep",)),
)}
