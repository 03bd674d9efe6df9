"""Pure loss functions of arrays: no model, no config, no I/O."""

from w2s_jax.losses.aggregation import REDUCTIONS, aggregate, reduce, safe_ratio
from w2s_jax.losses.distill import generalized_jsd_loss, reverse_kl_token_rewards
from w2s_jax.losses.policy import (
  POLICY_LOSSES,
  PolicyLoss,
  dynamic_sampling_mask,
  kl_penalty,
  overlong_penalty,
  policy_loss,
  unlikeliness_rewards,
)
from w2s_jax.losses.policy_kinds import cispo_loss, gspo_loss, ppo_clip_loss, reinforce_loss, topr_loss
from w2s_jax.losses.preference import (
  PREFERENCE_LOSSES,
  bradley_terry_loss,
  dpo_loss,
  hinge_loss,
  ipo_loss,
  kto_kl,
  kto_loss,
  orpo_loss,
  rpo_loss,
  simpo_loss,
)
from w2s_jax.losses.prm import prm_loss
from w2s_jax.losses.sft import sft_loss
from w2s_jax.losses.w2s import (
  STEP_FRAC_LOSSES,
  W2S_LOSSES,
  confidence_penalty_loss,
  entropy_loss,
  kl_loss,
  logconf_coef,
  logconf_loss,
  midweak_radius,
  product_loss,
  window_loss,
  xent_loss,
)

__all__ = [
  "PREFERENCE_LOSSES", "REDUCTIONS", "W2S_LOSSES", "aggregate", "bradley_terry_loss", "dpo_loss",
  "hinge_loss", "ipo_loss", "kto_kl", "kto_loss", "logconf_coef", "logconf_loss", "orpo_loss",
  "product_loss", "reduce", "rpo_loss", "safe_ratio", "sft_loss", "simpo_loss", "xent_loss",
  "POLICY_LOSSES", "dynamic_sampling_mask", "kl_penalty", "overlong_penalty", "policy_loss",
  "unlikeliness_rewards", "PolicyLoss", "cispo_loss", "gspo_loss", "ppo_clip_loss", "reinforce_loss",
  "topr_loss", "generalized_jsd_loss", "reverse_kl_token_rewards", "prm_loss",
  "STEP_FRAC_LOSSES", "confidence_penalty_loss", "entropy_loss", "kl_loss", "midweak_radius", "window_loss",
]
