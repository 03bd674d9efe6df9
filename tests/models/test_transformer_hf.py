"""Parity of `Transformer` with transformers' PyTorch models (the independent reference).

Tiny random Llama / Qwen2 / Qwen3 / Gemma 2 / Gemma 3 models (f32, eager attention) are converted
through `_hf_mapping` and must give the same logits to 1e-4 on an unpadded row, a right-padded row
and a left-padded row; the padded rows must also match the reference's *unpadded* logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from w2s_jax.models import _hf_mapping  # noqa: E402
from w2s_jax.models.presets import PRESETS, RopeScaling  # noqa: E402
from w2s_jax.models.transformer import Transformer  # noqa: E402

L = 12
VOCAB = 128
_SMALL = dict(
  vocab_size=VOCAB,
  hidden_size=64,
  intermediate_size=96,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  max_position_embeddings=64,
  attn_implementation="eager",
)

CASES = {
  "llama": (
    "LlamaConfig",
    "LlamaForCausalLM",
    dict(num_hidden_layers=2, tie_word_embeddings=False, rms_norm_eps=1e-5),
  ),
  "llama3_rope": (
    "LlamaConfig",
    "LlamaForCausalLM",
    dict(
      num_hidden_layers=2,
      tie_word_embeddings=True,
      # wavelengths 6.3 ... 2e4 against [16, 64]: high, medium and low frequencies all occur.
      rope_parameters=dict(
        rope_type="llama3",
        rope_theta=10_000.0,
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
      ),
    ),
  ),
  "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_hidden_layers=2, tie_word_embeddings=True)),
  "qwen3": (
    "Qwen3Config",
    "Qwen3ForCausalLM",
    dict(num_hidden_layers=2, head_dim=32, num_key_value_heads=1, tie_word_embeddings=False),
  ),
  "gemma2": (
    "Gemma2Config",
    "Gemma2ForCausalLM",
    dict(
      num_hidden_layers=3,
      sliding_window=4,
      query_pre_attn_scalar=24,
      attn_logit_softcapping=2.0,
      final_logit_softcapping=3.0,
    ),
  ),
  "gemma3": (
    "Gemma3TextConfig",
    "Gemma3ForCausalLM",
    dict(
      num_hidden_layers=4,
      sliding_window=4,
      sliding_window_pattern=3,
      query_pre_attn_scalar=32,
      rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        "full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
      },
    ),
  ),
}


def _hf_model(name):
  config_cls, model_cls, extra = CASES[name]
  config = getattr(transformers, config_cls)(**{**_SMALL, **extra})
  torch.manual_seed(0)
  model = getattr(transformers, model_cls)(config).eval()
  with torch.no_grad():  # random everything (norm scales and biases too) so no term hides
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  return model


def _batch():
  """Row 0 unpadded; row 1 = row 0[:8] right-padded; row 2 = row 0[:9] left-padded."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, size=(3, L))
  tokens[1, :8] = tokens[0, :8]
  tokens[2, 3:] = tokens[0, :9]
  mask = np.ones((3, L), np.int64)
  mask[1, 8:] = 0
  mask[2, :3] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # HF's convention for left padding
  return tokens, mask, positions


@jax.jit
def _forward(graphdef, state, tokens_BL, positions_BL, segment_ids_BL):
  model = nnx.merge(graphdef, state)
  return model(tokens_BL, positions_BL=positions_BL, segment_ids_BL=segment_ids_BL)


def _ours(hf_model):
  cfg = _hf_mapping.config_from_hf(hf_model.config.to_dict())
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  state_dict = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  _hf_mapping.load_hf_weights(model, state_dict)
  return cfg, model, state_dict


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(name):
  hf_model = _hf_model(name)
  cfg, model, state_dict = _ours(hf_model)
  tokens, mask, positions = _batch()
  with torch.no_grad():
    ref = hf_model(
      input_ids=torch.tensor(tokens),
      attention_mask=torch.tensor(mask),
      position_ids=torch.tensor(positions),
    ).logits.numpy()
  graphdef, state = nnx.split(model)
  with jax.numpy_rank_promotion("raise"):
    ours = _forward(
      graphdef, state, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask, jnp.int32)
    )
  ours = np.asarray(ours)
  assert ours.dtype == np.float32 and ours.shape == (3, L, VOCAB)
  assert np.isfinite(ours).all()  # padding rows included
  tol = dict(atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ours[0], ref[0], **tol)  # unpadded
  np.testing.assert_allclose(ours[1, :8], ref[1, :8], **tol)  # right padding, real tokens
  np.testing.assert_allclose(ours[2, 3:], ref[2, 3:], **tol)  # left padding, real tokens
  np.testing.assert_allclose(ours[1, :8], ref[0, :8], **tol)  # == the unpadded sequence
  np.testing.assert_allclose(ours[2, 3:], ref[0, :9], **tol)

  # Our params written back in HF names are the reference's tensors.
  back = _hf_mapping.hf_state_dict(model)
  for key, value in back.items():
    np.testing.assert_array_equal(value, state_dict[key], err_msg=key)
  assert set(state_dict) - set(back) <= {"lm_head.weight"}


def test_config_from_hf_reads_family_options():
  gemma3 = _hf_mapping.config_from_hf(_hf_model("gemma3").config.to_dict())
  assert gemma3.sliding_window == 4 and gemma3.sliding_window_pattern == 3
  assert (gemma3.rope_theta, gemma3.rope_local_theta) == (10_000.0, 100.0)
  assert gemma3.norm_offset == 1.0 and gemma3.qk_norm and gemma3.post_norms
  assert gemma3.mlp_activation == "gelu_tanh" and gemma3.query_pre_attn_scalar == 32
  llama = _hf_mapping.config_from_hf(_hf_model("llama3_rope").config.to_dict())
  assert llama.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 64)
  assert _hf_mapping.config_from_hf(_hf_model("qwen2").config.to_dict()).qkv_bias


def test_gemma3_preset_matches_transformers_defaults():
  """The real gemma-3-1b config.json values + transformers' defaults give our preset."""
  hf = transformers.Gemma3TextConfig(
    vocab_size=262_144,
    hidden_size=1152,
    intermediate_size=6912,
    num_hidden_layers=26,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    sliding_window=512,
    max_position_embeddings=32_768,
  )
  assert _hf_mapping.config_from_hf(hf.to_dict()) == PRESETS["gemma3-1b"]
