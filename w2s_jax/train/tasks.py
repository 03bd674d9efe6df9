"""Tasks: turn a config into the model factory, objective and batches the loop trains.

Only entry points read configs; this module is where a config's names become library calls.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from w2s_jax.data import pipeline, text
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train.loop import Setup
from w2s_jax.train.objectives import OBJECTIVES

CORPORA = {"python_reference": text.python_reference_examples}
TOKENIZERS = {"bytes": ByteTokenizer}


def sft_setup(config: ml_collections.ConfigDict) -> Setup:
  """SFT of a decoder on prompt/response pairs, packed with segment ids."""
  data_cfg = config.data
  if data_cfg.corpus not in CORPORA:
    raise ValueError(f"unknown corpus {data_cfg.corpus!r}; choose one of {sorted(CORPORA)}")
  tokenizer = TOKENIZERS[data_cfg.tokenizer]()
  corpus = CORPORA[data_cfg.corpus]
  data = pipeline.token_data(
    corpus("train", eval_frac=data_cfg.eval_frac, max_chars=data_cfg.max_chars),
    corpus("eval", eval_frac=data_cfg.eval_frac, max_chars=data_cfg.max_chars),
    tokenizer,
    seq_len=data_cfg.seq_len,
    batch_size=config.batch_size,
    eval_batches=data_cfg.eval_batches,
    seed=config.seed,
  )
  overrides = dict(config.model.get("overrides", {}))
  model_cfg = get_preset(config.model.preset, vocab_size=config.model.vocab_size, **overrides)
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"model vocab {model_cfg.vocab_size} < tokenizer vocab {tokenizer.vocab_size}")
  obj_cfg = dict(config.objective)
  name = obj_cfg.pop("name")
  return Setup(
    make_model=lambda rngs: Transformer(model_cfg, rngs=rngs),
    objective=OBJECTIVES[name](**obj_cfg),
    train_batches=data.train,
    eval_batches=data.eval_batches,
    info={"packing": {k: vars(v) for k, v in data.stats.items()}},
  )


TASKS: dict[str, Callable[[ml_collections.ConfigDict], Setup]] = {"sft": sft_setup}
