"""SFT of the tiny decoder on reasoning-gym problems → worked solutions (prompt `Question: …\nSolution:\n`).

COMMAND:
  python -m w2s_jax.main --config=configs/sft_tiny.py:smoke --workdir=/tmp/sft_tiny
  (arg `smoke`: 40 steps on `gcd` (Euclid's algorithm) in well under a minute on 2 CPU cores;
  no arg: 2000 steps on `gsm_symbolic`, GSM8K-derived word problems.)
EXPECTED: the smoke loss falls from ~6.8 to ~1.5 and the eval loss ends below 2 (byte tokens, vocab 512).
"""

import ml_collections

from w2s_jax.config_files import load_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  common = load_common()
  c = ml_collections.ConfigDict()
  c.task = "sft"
  common.loop(c, total_steps=40 if smoke else 2000, checkpoint_every_steps=10 if smoke else 200,
              keep_checkpoints=3)  # seed, mesh, sharding, cpu_devices, distributed: common.py's
  c.batch_size = 8
  c.grad_accum_steps = 1
  c.step_form = "jit"  # or "shard_map" (explicit data parallelism; needs sharding="dp")
  c.log_every_steps = 1 if smoke else 10
  c.eval_every_steps = 20 if smoke else 200

  c.model = common.model("tiny", max_seq_len=1024)

  c.data = ml_collections.ConfigDict()
  # smoke: GCDs by Euclid's algorithm (~250-byte worked solutions); full: GSM8K-derived word problems.
  # A text corpus of w2s_jax.data.sft_sources.TEXT_CORPORA, or any task spec (w2s_jax.data.task_registry):
  # a reasoning-gym dataset name, a .jsonl/.parquet file of prompt/answer records, or "module:function".
  c.data.corpus = "gcd" if smoke else "gsm_symbolic"
  c.data.task_options = ""  # the task's options: a dict in a config file, or a JSON object string on the CLI
  c.data.answer_format = ""  # how solutions state the answer: answer_line (default) | answer_tag | boxed | …
  # corpus "jsonl": your own `{"prompt", "response"}` records, comma-separated .jsonl/.parquet paths, e.g.
  # --config.data.corpus=jsonl --config.data.train_files=a.jsonl --config.data.eval_files=b.jsonl
  c.data.train_files = ""
  c.data.eval_files = ""
  c.data.skip_bad_records = False  # True: skip and count bad records (metrics `bad_records_skipped`)
  c.data.tokenizer = "bytes"  # or gguf:smollm2-135m, a .model / tokenizer.json path
  c.data.chat_template = ""  # "tokenizer" (its own, e.g. SmolLM2's), a CHAT_TEMPLATES key or Jinja; "" = off
  c.data.seq_len = 256 if smoke else 1024
  c.data.overlong = "drop"  # "drop" or "truncate" (counted), or "error" (names data.seq_len and the longest)
  c.data.train_size = 2000 if smoke else 20000
  c.data.eval_size = 200 if smoke else 1000
  c.data.seed = 0
  c.data.data_dir = ""  # "" generates in process; a path reads/builds the w2s_reasoning TFDS dataset there
  c.data.eval_batches = 2 if smoke else 8

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "sft"
  c.loss.reduction = "token-mean"
  c.loss.z_loss = 0.0
  c.loss.label_smoothing = 0.0

  c.optimizer = common.optimizer(3e-3, warmup_steps=5 if smoke else 100)  # AdamW, cosine to 10 %
  return c
