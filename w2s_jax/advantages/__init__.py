"""Advantage estimators: pure functions of rewards (and values), no model, no config.

`ADVANTAGES` (`registry.py`) maps every config name (`advantage.name`, including `tempo`, `treerl`,
`vineppo`, `rft`) to an `Estimator` of one signature, `entry(RolloutAdvantageInputs, AdvantageOptions) ->
(adv_RN, returns_RN)`, that names its pure function (`entry.fn`) and the rollout inputs it needs.

`ADVANTAGE_ESTIMATORS` maps the names users know from TRL/verl to the functions, in three call forms:

- reinforce, rloo, grpo, dr_grpo, psr, nsr, w_reinforce: `fn(rewards_BG, mask_BG=None) -> adv_BG`;
- reinforce_pp_baseline: `fn(rewards_BG, token_mask, mask_BG=None) -> per-token adv` (mask's shape);
- reinforce_pp: `fn(token_rewards_NL, mask_NL, *, gamma) -> (adv_NL, returns_NL)`;
  gae: `fn(rewards_NL, values_NL, mask_NL, *, gamma, lam) -> (adv_NL, returns_NL)`.

Sequence-level advantages go to tokens with `broadcast_to_tokens`; token rewards for the token-level
estimators come from `outcome_token_rewards`.
"""

from w2s_jax.advantages.gae import (
  discounted_returns,
  gae_advantages,
  last_token_mask,
  masked_mean,
  masked_whiten,
  outcome_token_rewards,
)
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
from w2s_jax.advantages.process import (
  implicit_prm_q,
  implicit_prm_step_rewards,
  math_shepherd_labels,
  outcome_step_rewards,
  pav_progress,
  pav_rewards,
  prm_best_of_n,
  prm_solution_scores,
)
from w2s_jax.advantages.registry import (
  ADVANTAGES,
  AdvantageOptions,
  Estimator,
  RolloutAdvantageInputs,
  nsr_advantages,
  psr_advantages,
)
from w2s_jax.advantages.steps import step_ids, step_index
from w2s_jax.advantages.tree import (
  gather_to_tokens,
  group_prefix_tree,
  mc_step_advantages,
  mc_step_values,
  prefix_tree_values,
  root_ids,
  tempo_advantages,
  treerl_advantages,
)

ADVANTAGE_ESTIMATORS = {
  "reinforce": reinforce_advantages,
  "rloo": rloo_advantages,
  "grpo": grpo_advantages,
  "dr_grpo": dr_grpo_advantages,
  "psr": psr_advantages,
  "nsr": nsr_advantages,
  "w_reinforce": w_reinforce_advantages,
  "reinforce_pp": reinforce_pp_advantages,
  "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
  "gae": gae_advantages,
}

__all__ = [
  "ADVANTAGES", "AdvantageOptions", "Estimator", "RolloutAdvantageInputs", "nsr_advantages", "psr_advantages",
  "step_ids", "step_index",
  "ADVANTAGE_ESTIMATORS", "broadcast_to_tokens", "discounted_returns", "dr_grpo_advantages",
  "gae_advantages", "grpo_advantages", "last_token_mask", "masked_mean", "masked_whiten",
  "outcome_token_rewards", "reinforce_advantages", "reinforce_pp_advantages",
  "reinforce_pp_baseline_advantages", "rloo_advantages", "w_reinforce_advantages",
  # tree-based Monte Carlo values and process rewards
  "gather_to_tokens", "group_prefix_tree", "implicit_prm_q", "implicit_prm_step_rewards",
  "math_shepherd_labels", "mc_step_advantages", "mc_step_values", "outcome_step_rewards", "pav_progress",
  "pav_rewards", "prefix_tree_values", "prm_best_of_n", "prm_solution_scores", "root_ids",
  "tempo_advantages", "treerl_advantages",
]
