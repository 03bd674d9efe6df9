"""Tasks: turn a config into the model factory, objective and batches the loop trains.

Only entry points read configs; this module is where a config's names become library calls.
"""

from __future__ import annotations

import jax
import ml_collections

from w2s_jax import sharding as shd
from w2s_jax.data import chat, limits, pipeline, sft_sources
from w2s_jax.data.tokenizers import ByteTokenizer, Tokenizer, load_tokenizer
from w2s_jax.models.convert import gguf_tokenizer, smollm2_gguf_path
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.train.loop import Setup
from w2s_jax.train.objectives import OBJECTIVES

CORPORA = sft_sources.SFT_CORPORA  # name -> fn(split, data_cfg) -> (pairs, info); a live view of the tasks
TOKENIZERS = {"bytes": ByteTokenizer}


def make_tokenizer(spec: str) -> Tokenizer:
  """A registered tokenizer name, `gguf:smollm2-135m` / `gguf:<file>` (the tokenizer and chat template a
  GGUF checkpoint embeds), or a `.model` / `tokenizer.json` path (see `load_tokenizer`)."""
  if spec.startswith("gguf:"):
    tokenizer = gguf_tokenizer(smollm2_gguf_path() if spec == "gguf:smollm2-135m" else spec[len("gguf:"):])
    if tokenizer is None:
      raise ValueError(f"data.tokenizer={spec!r}: the GGUF file has no byte-level BPE tokenizer")
    return tokenizer
  return TOKENIZERS[spec]() if spec in TOKENIZERS else load_tokenizer(spec)


def process_share(config: ml_collections.ConfigDict, rows: int) -> slice | None:
  """This process's rows of a global batch of `rows` rows on the run's mesh (`config.mesh`), the block its
  devices hold (`pipeline.process_rows`); None in a one-process run, which reads whole batches."""
  if jax.process_count() == 1:
    return None
  return pipeline.process_rows(shd.make_mesh(dict(config.mesh)), rows)


def sft_setup(config: ml_collections.ConfigDict) -> Setup:
  """SFT of a decoder on prompt/response pairs, packed with segment ids."""
  data_cfg = config.data
  if data_cfg.corpus not in CORPORA:
    raise ValueError(f"unknown corpus {data_cfg.corpus!r}; choose one of {sorted(CORPORA)}, any "
                     "reasoning-gym dataset name, a .jsonl/.parquet file of prompt/answer records or "
                     "'module:function'")
  tokenizer = make_tokenizer(data_cfg.tokenizer)
  corpus = CORPORA[data_cfg.corpus]
  (train_pairs, train_info), (eval_pairs, eval_info) = corpus("train", data_cfg), corpus("eval", data_cfg)
  template = chat.resolve_template(data_cfg.get("chat_template", ""), tokenizer)
  if template:  # prompt = the conversation up to the assistant header; the loss covers the assistant turn
    train_pairs, eval_pairs = ([chat.render_pair(template, tokenizer, p, r) for p, r in pairs]
                               for pairs in (train_pairs, eval_pairs))
  overlong = data_cfg.get("overlong", "truncate")
  for split, pairs in (("train", train_pairs), ("eval", eval_pairs)):
    limits.check_examples(pairs, tokenizer, data_cfg.seq_len, overlong=overlong, batch_size=config.batch_size,
                          split=split)
  process = process_share(config, config.batch_size)  # several processes: each reads only its rows
  data = pipeline.token_data(
    train_pairs,
    eval_pairs,
    tokenizer,
    seq_len=data_cfg.seq_len,
    batch_size=config.batch_size,
    eval_batches=data_cfg.eval_batches,
    seed=config.seed,
    overlong="drop" if overlong == "error" else overlong,  # "error": checked above, nothing is over
    process=process,
  )
  model_cfg = from_section(config.model)
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"model vocab {model_cfg.vocab_size} < tokenizer vocab {tokenizer.vocab_size}")
  obj_cfg = dict(config.loss)
  name = obj_cfg.pop("name")
  return Setup(
    make_model=lambda rngs: Transformer(model_cfg, rngs=rngs),
    objective=OBJECTIVES[name](**obj_cfg),
    train_batches=data.train,
    eval_batches=data.eval_batches,
    global_rows=config.batch_size,
    info={
      "packing": {k: vars(v) for k, v in data.stats.items()},
      "corpus": {"train": train_info, "eval": eval_info},
      "metrics": {
        "bad_records_skipped": sum(int(i.get("bad_records", 0)) for i in (train_info, eval_info)),
        "examples_dropped": sum(int(getattr(v, "dropped", 0)) for v in data.stats.values()),
        "process_batch_rows": len(range(config.batch_size)[process or slice(None)]),  # rows read here
      },
    },
  )

