"""CLI: train a SentencePiece tokenizer for from-scratch models.

COMMAND:
  python -m w2s_jax.data.train_tokenizer --model_prefix=/tmp/spm/ladder --vocab_size=4096 \
      --tfds=w2s_pretrain/small --data_dir=/tmp/tfds        # the ladder's pretraining corpus
  python -m w2s_jax.data.train_tokenizer --model_prefix=/tmp/spm/mine --vocab_size=1024 \
      --input=a.txt,b.jsonl --field=text                     # users' text or JSONL files
Writes `<model_prefix>.model` and `.vocab`; load with `load_tokenizer("<model_prefix>.model")`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from absl import app, flags

from w2s_jax.data import builders
from w2s_jax.data.tokenizers import train_sentencepiece

_INPUT = flags.DEFINE_list("input", [], "Text files (one document per file) or .jsonl files (see --field).")
_FIELD = flags.DEFINE_string("field", "text", "Text field of .jsonl inputs.")
_TFDS = flags.DEFINE_string("tfds", "", "A registered builder/config to train on, e.g. w2s_pretrain/small.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (built there if missing).")
_PREFIX = flags.DEFINE_string("model_prefix", None, "Output path without extension.")
_VOCAB = flags.DEFINE_integer("vocab_size", 4096, "Number of pieces.")
_TYPE = flags.DEFINE_enum("model_type", "bpe", ["bpe", "unigram"], "SentencePiece model type.")


def file_texts(paths: Sequence[str], field: str = "text") -> Iterator[str]:
  """Texts of plain files (whole file) and .jsonl files (`field` of every line)."""
  for path in paths:
    if path.endswith(".jsonl"):
      with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
          if line.strip():
            record = json.loads(line)
            if not isinstance(record.get(field), str):
              raise ValueError(f"{path}:{number}: field {field!r} missing or not text")
            yield record[field]
    else:
      with open(path, encoding="utf-8") as f:
        yield f.read()


def tfds_texts(spec: str, data_dir: str | None, field: str = "text") -> Iterator[str]:
  """Texts of the train split of a registered builder (`name/config`), building it if needed."""
  name, _, config = spec.partition("/")
  source = builders.build(name, config or None, data_dir=data_dir).as_data_source()["train"]
  for i in range(len(source)):
    yield source[i][field].decode("utf-8")


def main(argv: list[str]) -> None:
  del argv

  if not _PREFIX.value or not (_INPUT.value or _TFDS.value):
    raise app.UsageError("give --model_prefix and --input or --tfds")
  texts = tfds_texts(_TFDS.value, _DATA_DIR.value) if _TFDS.value else file_texts(_INPUT.value, _FIELD.value)
  tok = train_sentencepiece(texts, _PREFIX.value, vocab_size=_VOCAB.value, model_type=_TYPE.value)
  print(json.dumps({"model": f"{_PREFIX.value}.model", "vocab_size": tok.vocab_size}))


if __name__ == "__main__":
  app.run(main)
