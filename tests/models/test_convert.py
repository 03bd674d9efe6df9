"""`convert.load_hf` / `save_hf` against transformers (torch CPU) on tiny random checkpoints.

Each family's tiny model is written with `save_pretrained` (the Llama one sharded through
`max_shard_size`), loaded with `load_hf` and must give transformers' logits to 1e-4 (f32) on a padded
batch; `save_hf` output must load back into transformers and give the same logits again.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from w2s_jax import sharding as shd  # noqa: E402
from w2s_jax.data.tokenizers import HFTokenizer  # noqa: E402
from w2s_jax.models import convert  # noqa: E402
from w2s_jax.models._hf_mapping import UnsupportedHFConfig  # noqa: E402

L, VOCAB = 10, 96
_SMALL = dict(
  vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
  head_dim=8, max_position_embeddings=64, attn_implementation="eager",
)
CASES = {
  "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_hidden_layers=2, tie_word_embeddings=False)),
  "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_hidden_layers=2, tie_word_embeddings=True)),
  "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_hidden_layers=2, tie_word_embeddings=False)),
  "gemma2": (
    "Gemma2Config", "Gemma2ForCausalLM",
    dict(num_hidden_layers=2, sliding_window=4, query_pre_attn_scalar=8, attn_logit_softcapping=2.0,
         final_logit_softcapping=3.0),
  ),
  "gemma3": (
    "Gemma3TextConfig", "Gemma3ForCausalLM",
    dict(num_hidden_layers=3, sliding_window=4, sliding_window_pattern=3, query_pre_attn_scalar=8,
         rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                          "full_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
  ),
}


def _hf_model(name: str, **extra):
  config_cls, model_cls, kw = CASES[name]
  config = getattr(transformers, config_cls)(**{**_SMALL, **kw, **extra})
  torch.manual_seed(0)
  model = getattr(transformers, model_cls)(config).eval()
  with torch.no_grad():  # random norm scales and biases too, so no term hides
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  return model


def _batch():
  """Row 0 unpadded, row 1 right-padded after 7 tokens, row 2 left-padded by 3."""
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(3, L))
  mask = np.ones((3, L), np.int64)
  mask[1, 7:] = 0
  mask[2, :3] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return tokens, mask, positions


def _ref_logits(hf_model) -> np.ndarray:
  tokens, mask, positions = _batch()
  with torch.no_grad():
    return hf_model(
      input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
    ).logits.numpy()


def _our_logits(model) -> np.ndarray:
  tokens, mask, positions = _batch()
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, t, p, m: nnx.merge(graphdef, s)(t, positions_BL=p, segment_ids_BL=m))
  return np.asarray(fwd(state, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask, jnp.int32)))


def _assert_close(ours: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
  """Real (unpadded) positions of every row match."""
  _, mask, _ = _batch()
  real = mask.astype(bool)
  assert np.isfinite(ours).all()
  np.testing.assert_allclose(ours[real], ref[real], atol=atol, rtol=atol)


@pytest.mark.parametrize("name", list(CASES))
def test_load_hf_and_save_hf_match_transformers(name, tmp_path):
  hf_model = _hf_model(name)
  ref = _ref_logits(hf_model)
  src = tmp_path / "hf"
  sharded = name == "llama"
  hf_model.save_pretrained(src, max_shard_size="20KB" if sharded else "1GB")
  assert os.path.exists(src / "model.safetensors.index.json") == sharded

  model, tokenizer = convert.load_hf(src)
  assert tokenizer is None  # no tokenizer.json in the folder
  _assert_close(_our_logits(model), ref)

  out = tmp_path / "ours"
  convert.save_hf(model, out, max_shard_size=30_000 if name == "qwen2" else None)
  assert os.path.exists(out / "model.safetensors.index.json") == (name == "qwen2")
  back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
  assert type(back) is type(hf_model)
  assert back.config.model_type == hf_model.config.model_type
  _assert_close(_ref_logits(back), ref)
  for key, value in back.state_dict().items():  # the very same tensors
    np.testing.assert_array_equal(value.numpy(), hf_model.state_dict()[key].numpy(), err_msg=key)


def test_load_hf_casts_to_param_dtype(tmp_path):
  _hf_model("qwen2").save_pretrained(tmp_path)
  model, _ = convert.load_hf(tmp_path, dtype="bfloat16", param_dtype="bfloat16", max_seq_len=32)
  assert model.cfg.dtype == "bfloat16" and model.cfg.max_seq_len == 32
  assert model.blocks[0].attn.q_DNH[...].dtype == jnp.bfloat16
  convert.save_hf(model, tmp_path / "bf16")
  with open(tmp_path / "bf16" / "config.json") as f:
    assert json.load(f)["dtype"] == "bfloat16"
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
  assert back.model.embed_tokens.weight.dtype == torch.bfloat16
  again, _ = convert.load_hf(tmp_path / "bf16", param_dtype="bfloat16")
  for x, y in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(again))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_hf_places_params_on_mesh(tmp_path):
  hf_model = _hf_model("llama")
  hf_model.save_pretrained(tmp_path)
  mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
  model, _ = convert.load_hf(tmp_path, mesh=mesh, rules="fsdp_tp")
  q = model.blocks[0].attn.q_DNH[...]  # [D=32, N=4, H=8] on ('embed', 'heads', 'head_dim')
  assert q.sharding.spec == PartitionSpec("fsdp", "tensor", None)
  assert {s.data.shape for s in q.addressable_shards} == {(8, 2, 8)}
  emb = model.embedding_VD[...]
  assert emb.sharding.spec == PartitionSpec("tensor", "fsdp")
  assert {s.data.shape for s in emb.addressable_shards} == {(VOCAB // 2, 32 // 4)}
  for leaf in jax.tree.leaves(nnx.state(model)):
    assert len(leaf.sharding.device_set) == 8  # every array spans the mesh, none sits on one device
  with jax.set_mesh(mesh):
    _assert_close(_our_logits(model), _ref_logits(hf_model))


def test_indivisible_dimension_is_replicated_with_warning(tmp_path):
  _hf_model("qwen3", num_key_value_heads=1).save_pretrained(tmp_path)
  mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
  with pytest.warns(UserWarning, match="replicated"):
    model, _ = convert.load_hf(tmp_path, mesh=mesh)
  assert model.blocks[0].attn.k_DKH[...].sharding.spec == PartitionSpec("fsdp", None, None)


def _train_tokenizer():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=VOCAB + 200, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  text = ["the cat sat on the mat", "weak to strong generalisation", "the answer is 42"] * 20
  tok.train_from_iterator(text, trainer)
  return tok


def test_tokenizer_from_folder_matches_transformers(tmp_path):
  tok = _train_tokenizer()
  hf_model = _hf_model("llama", vocab_size=tok.get_vocab_size())
  hf_model.save_pretrained(tmp_path)
  tok.save(str(tmp_path / "tokenizer.json"))
  template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
               "eos_token": "<|im_end|>", "chat_template": template}, f)
  model, ours = convert.load_hf(tmp_path)
  assert isinstance(ours, HFTokenizer)  # the class `data.tokenizers` names, defined in `models`
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 2)  # no pad token: eos
  assert ours.vocab_size == tok.get_vocab_size() == model.cfg.vocab_size
  ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
  for text in ["the cat sat", "strong 42<|im_end|>", "unseen wörds ✓"]:
    ids = ours.encode(text)
    assert ids == ref(text, add_special_tokens=False).input_ids
    assert ours.decode(ids, skip_special_tokens=False) == text
  assert ours.decode(ours.encode("the mat<|im_end|>")) == "the mat"  # special tokens dropped by default
  chat = ours.apply_chat_template([{"role": "user", "content": "hi"}])
  assert chat == ref.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)

  out = tmp_path / "out"
  convert.save_hf(model, out, tokenizer=ours)
  again = transformers.AutoTokenizer.from_pretrained(out)
  assert again("the mat", add_special_tokens=False).input_ids == ours.encode("the mat")
  assert again.eos_token == "<|im_end|>"
  assert convert.load_hf(out).tokenizer.eos_id == 2


def test_unsupported_configs_raise_value_errors(tmp_path):
  assert issubclass(UnsupportedHFConfig, ValueError)
  with open(tmp_path / "config.json", "w") as f:
    json.dump({"model_type": "mistral", "num_attention_heads": 4, "num_hidden_layers": 1}, f)
  with pytest.raises(UnsupportedHFConfig, match="mistral"):
    convert.load_hf(tmp_path)


def test_mismatched_tensors_are_named(tmp_path):
  hf_model = _hf_model("llama")
  hf_model.save_pretrained(tmp_path)
  with open(tmp_path / "config.json") as f:
    config = json.load(f)
  config["num_hidden_layers"] = 3
  with open(tmp_path / "config.json", "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match=r"missing \['model\.layers\.2\."):
    convert.load_hf(tmp_path)
