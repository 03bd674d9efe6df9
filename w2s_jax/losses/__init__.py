"""Pure loss functions of arrays: no model, no config, no I/O."""

from w2s_jax.losses.aggregation import REDUCTIONS, aggregate, reduce, safe_ratio
from w2s_jax.losses.sft import sft_loss
from w2s_jax.losses.w2s import W2S_LOSSES, logconf_coef, logconf_loss, product_loss, xent_loss

__all__ = [
  "REDUCTIONS", "W2S_LOSSES", "aggregate", "logconf_coef", "logconf_loss", "product_loss", "reduce",
  "safe_ratio", "sft_loss", "xent_loss",
]
