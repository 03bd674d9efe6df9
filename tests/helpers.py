"""Shared test helpers."""

from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from w2s_jax.config_files import load_config
from w2s_jax.models.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]

# Gemma-flavoured tiny config: every optional feature on (sliding window 3, every 2nd layer global).
GEMMA_TINY = get_preset(
  "tiny",
  n_layers=3,
  mlp_activation="gelu_tanh",
  norm_offset=1.0,
  qk_norm=True,
  rope_local_theta=100.0,
  scale_embeddings=True,
  attn_logit_softcap=5.0,
  final_logit_softcap=10.0,
  query_pre_attn_scalar=24.0,
  sliding_window=3,
  sliding_window_pattern=2,
  post_norms=True,
)

__all__ = ["GEMMA_TINY", "ROOT", "load_config"]


class Linear4(nnx.Module):
  """The smallest trainable model of the loop tests: one 4 -> 1 linear layer."""

  def __init__(self, rngs: nnx.Rngs):
    self.w = nnx.Linear(4, 1, rngs=rngs)


def squared_output_objective(model, batch, rng):
  """Σ (x·W + b)² over the batch, weight 1, no metrics (an objective of `make_train_step`)."""
  del rng
  return jnp.sum(model.w(batch["x"]) ** 2), jnp.ones(()), {}
