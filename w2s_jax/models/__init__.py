"""Models: one NNX decoder (`Transformer`), its heads, named configurations, checkpoint conversion
(`convert`: HF safetensors / GGUF in, HF safetensors out), the tokenizer a checkpoint carries
(`hf_tokenizer`: `HFTokenizer`, chat templates; `data.tokenizers` re-exports it), LoRA adapters
(`lora`) and the shared-prompt forward (`shared_prefix`: each prompt once, its continuations attending to
its keys/values)."""

from w2s_jax.models.convert import (
  LoadedModel,
  UnsupportedHFConfig,
  gguf_tokenizer,
  load_gguf,
  load_hf,
  save_hf,
)
from w2s_jax.models.heads import (
  ClassifierHead,
  SequenceClassifier,
  ValueHead,
  ValueModel,
  last_token_index,
)
from w2s_jax.models.lora import LoRAParam, LoRAProjection, apply_lora, merge_lora, split_lora
from w2s_jax.models.presets import PRESETS, ModelConfig, RopeScaling, count_params, from_section, get_preset
from w2s_jax.models.shared_prefix import shared_prefix_hidden, shared_prefix_logits
from w2s_jax.models.transformer import Transformer, attention_mask, dot_product_attention

__all__ = [
  "PRESETS",
  "ClassifierHead",
  "LoRAParam",
  "LoRAProjection",
  "LoadedModel",
  "ModelConfig",
  "RopeScaling",
  "SequenceClassifier",
  "Transformer",
  "UnsupportedHFConfig",
  "ValueHead",
  "ValueModel",
  "apply_lora",
  "attention_mask",
  "count_params",
  "dot_product_attention",
  "from_section",
  "get_preset",
  "gguf_tokenizer",
  "last_token_index",
  "load_gguf",
  "load_hf",
  "merge_lora",
  "save_hf",
  "shared_prefix_hidden",
  "shared_prefix_logits",
  "split_lora",
]
