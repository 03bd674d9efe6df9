"""SentencePiece and HF tokenizer.json behind the `Tokenizer` interface; training; chat templates."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from w2s_jax.data import reasoning
from w2s_jax.data.tokenizers import (
  CHAT_TEMPLATES,
  ByteTokenizer,
  HFTokenizer,
  SentencePieceTokenizer,
  load_tokenizer,
  train_sentencepiece,
)

TEXTS = [f"Question: {p.prompt}\nSolution:\n{p.solution}"
         for p in reasoning.generate("gsm_symbolic", "train", 300)]
SAMPLES = ["Answer: 1,234 apples × 3 = 3702", "naïve café — 漢字 🙂", "two  spaces\n\nand\ttabs "]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  return train_sentencepiece(TEXTS, tmp_path_factory.mktemp("spm") / "gsm", vocab_size=600)


def test_sentencepiece_ids_and_round_trip(spm_model):
  tok = spm_model
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 600)
  assert [tok.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
  for s in SAMPLES + TEXTS[:20]:
    ids = tok.encode(s)
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.decode(ids) == s  # byte fallback and identity normalisation keep every character
  # a learned vocabulary compresses the text it was trained on well beyond bytes
  n_bytes = sum(len(t.encode()) for t in TEXTS[:50])
  assert sum(len(tok.encode(t)) for t in TEXTS[:50]) < n_bytes / 1.8
  assert tok.decode([tok.bos_id, *tok.encode("abc"), tok.eos_id, tok.pad_id]) == "abc"


def test_sentencepiece_training_is_deterministic(spm_model, tmp_path):
  again = train_sentencepiece(TEXTS, tmp_path / "again", vocab_size=600)
  assert [again.sp.id_to_piece(i) for i in range(600)] == [spm_model.sp.id_to_piece(i) for i in range(600)]


def test_load_tokenizer_dispatches(spm_model, tmp_path):
  assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
  assert isinstance(load_tokenizer(spm_model.path), SentencePieceTokenizer)
  with pytest.raises(ValueError, match="tokenizer.json"):
    load_tokenizer(str(tmp_path / "nothing"))


def test_gemma_chat_template(spm_model):
  tok = SentencePieceTokenizer(spm_model.path, chat_template="gemma")
  text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                                 add_generation_prompt=False)
  assert text == "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"
  with pytest.raises(ValueError, match="no chat template"):
    spm_model.apply_chat_template([{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS, trainer=trainer)
  d = tmp_path_factory.mktemp("hf")
  tok.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(json.dumps({
    "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    "chat_template": CHAT_TEMPLATES["chatml"], "tokenizer_class": "PreTrainedTokenizerFast",
  }))
  return d


def test_hf_tokenizer_matches_transformers(hf_dir):
  PreTrainedTokenizerFast = pytest.importorskip("transformers").PreTrainedTokenizerFast

  ours = load_tokenizer(str(hf_dir))
  ref = PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
  assert isinstance(ours, HFTokenizer)
  assert (ours.pad_id, ours.bos_id, ours.eos_id) == tuple(ref.convert_tokens_to_ids(
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
  assert ours.vocab_size == len(ref)
  for s in SAMPLES + TEXTS[:10]:
    ids = ours.encode(s)
    assert ids == ref.encode(s, add_special_tokens=False)
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True) == s


def test_hf_chat_template_matches_transformers(hf_dir):
  AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer

  ours = HFTokenizer(hf_dir / "tokenizer.json")
  ref = AutoTokenizer.from_pretrained(str(hf_dir))
  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 × 7?"}]
  expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  assert ours.apply_chat_template(messages) == expected
  assert expected.endswith("<|im_start|>assistant\n")


def test_hf_tokenizer_missing_special_token_is_named(hf_dir):
  with pytest.raises(ValueError, match="'<nope>' is not in the vocabulary"):
    HFTokenizer(hf_dir, eos_token="<nope>")


def test_train_tokenizer_cli(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:200]))
  out = subprocess.run(
    [sys.executable, "-m", "w2s_jax.data.train_tokenizer", f"--input={corpus}",
     f"--model_prefix={tmp_path / 'cli'}", "--vocab_size=400"],
    cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout.strip().splitlines()[-1])["vocab_size"] == 400
  tok = load_tokenizer(str(tmp_path / "cli.model"))
  assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]
