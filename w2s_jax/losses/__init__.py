"""Pure loss functions of arrays: no model, no config, no I/O."""

from w2s_jax.losses.aggregation import REDUCTIONS, aggregate, reduce, safe_ratio
from w2s_jax.losses.sft import sft_loss

__all__ = ["REDUCTIONS", "aggregate", "reduce", "safe_ratio", "sft_loss"]
