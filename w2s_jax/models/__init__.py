"""Models: one NNX decoder (`Transformer`), its heads, and named configurations."""

from w2s_jax.models.heads import (
  ClassifierHead,
  SequenceClassifier,
  ValueHead,
  ValueModel,
  last_token_index,
)
from w2s_jax.models.presets import PRESETS, ModelConfig, RopeScaling, count_params, get_preset
from w2s_jax.models.transformer import Transformer, attention_mask, dot_product_attention

__all__ = [
  "PRESETS",
  "ClassifierHead",
  "ModelConfig",
  "RopeScaling",
  "SequenceClassifier",
  "Transformer",
  "ValueHead",
  "ValueModel",
  "attention_mask",
  "count_params",
  "dot_product_attention",
  "get_preset",
  "last_token_index",
]
