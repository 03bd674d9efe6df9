"""Shared test helpers."""

from pathlib import Path

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
