"""The weak-to-strong sweep (Burns et al. 2023) on a reasoning-gym verification task.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_sweep.py:smoke --workdir=runs/w2s_smoke
  python -m w2s_jax.main --config=configs/w2s_sweep.py --workdir=runs/w2s          # the full sweep
  args: `smoke` (two small rungs, one seed, minutes on CPU) or nothing; override with --config.x=y,
  e.g. --config.train.mode=probe, --config.data.task=gsm_symbolic, --config.ensemble=3.
OUTPUT: results.json (ceilings, transfer accuracies, PGR medians with 95 % bootstrap CIs), plots/*.png,
  metrics.jsonl (one line per finished training), runs/*/ (each training's own folder, resumable).
"""

import ml_collections

from w2s_jax.config_files import load_common
from w2s_jax.train.config_lib import default_warmup_steps


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = ml_collections.ConfigDict()
  c.task = "w2s_sweep"
  c.seed = 0
  c.seeds = (0,) if smoke else (0, 1, 2)  # tuples: overridable, --config.seeds="(0, 1, 2, 3)"
  c.losses = ("xent", "logconf") if smoke else ("xent", "logconf", "product")
  c.ensemble = 1  # k weak models per size, soft labels averaged
  c.label_noise = 0.0  # share of weak labels flipped (controlled noise studies)
  c.cpu_devices = 0
  c.mesh = ml_collections.ConfigDict({"data": 1 if smoke else -1})

  c.data = ml_collections.ConfigDict()
  # chain_sum (easy) | gcd (medium) | gsm_symbolic (hard) | chain_sum_3x1, chain_sum_2x2 (small variants,
  # with ladder.corpus = "w2s:<variant>" to pretrain the ladder on that task: configs/quickstart.py:ladder) |
  # any reasoning-gym dataset, e.g. sentence_reordering, syllogism, word_sorting (w2s_sets.TASK_KINDS) |
  # your own task: a .jsonl/.parquet file of prompt/answer records or "module:function" (task_registry)
  c.data.task = "chain_sum"
  c.data.train_size = 256 if smoke else 4000
  c.data.eval_size = 128 if smoke else 1000
  c.data.max_len = 64 if smoke else 160
  c.data.seed = 0
  c.data.candidates = 1  # records per train question (each its own coin); A/B halves then split by question
  # the record text: "" = "Q: <question> A: <candidate>"; else a format string with {candidate} (and
  # optionally {question}), e.g. "Sentence: {candidate}" for sentence_reordering
  c.data.template = ""
  c.data.distractors = ()  # wrong-candidate kinds (w2s_sets.STRING_KINDS, ...); () = the task's default

  c.ladder = ml_collections.ConfigDict()
  # rungs, weakest first: ladder-N (pretrained here), gguf:smollm2-135m, gguf:/file.gguf, hf:/folder, or a
  # truncated checkpoint <checkpoint>@k (its first k blocks + final norm + head), e.g. gguf:smollm2-135m@8
  c.ladder.sizes = ("ladder-0", "ladder-1") if smoke else ("ladder-0", "ladder-1", "ladder-2", "ladder-3")
  c.ladder.corpus = "pretrain"  # worked reasoning problems + Q&A of 18 more tasks + Python reference text,
  # or "w2s:<variant>": worked problems of a w2s_sets.VARIANTS task (corpus_options: {"problems": N})
  c.ladder.corpus_options = ml_collections.ConfigDict(
    {"problems_per_task": 100 if smoke else 2000, "qa_per_task": 20 if smoke else 500, "max_chars": 1000}
  )
  c.ladder.vocab_size = 512
  c.ladder.seq_len = 128
  c.ladder.total_steps = 30 if smoke else 1500
  c.ladder.batch_size = 8 if smoke else 16
  c.ladder.lr = 3e-3
  c.ladder.seed = 0
  c.ladder.cache_dir = ""  # empty: $W2S_JAX_CACHE or ~/.cache/w2s_jax

  c.train = ml_collections.ConfigDict()
  c.train.mode = "finetune"  # finetune | probe | lora (every rung); top | top_lora (gguf:/hf: rungs only)
  # mode of gguf:/hf: rungs ("" = train.mode): probe (linear head on cached features), top (the top
  # `top_blocks` blocks + final norm + head on the cached residual stream below them), top_lora (LoRA on
  # those blocks + head), lora / finetune (the whole rung: forward and backward through every block)
  c.train.pretrained_mode = ""
  c.train.top_blocks = 1
  c.train.pooling = "last"  # probe features of gguf:/hf: rungs: "last" token or "mean" over real tokens
  c.train.cache_dir = ""  # feature cache of gguf:/hf: rungs; "" = <ladder.cache_dir or cache root>/features
  c.train.cache_dtype = "float32"  # cached per-token states: float32 | float16
  # EleutherAI/w2s weak-label filtering/relabelling in the strong student's feature space
  # (w2s_jax.w2s.label_filters.LABEL_FILTERS): none | knn_drop | knn_relabel | probe_drop | probe_relabel |
  # topo_drop; kwargs as a JSON object string, e.g. --config.train.label_filter_kwargs='{"k": 20}'
  c.train.label_filter = "none"
  c.train.label_filter_kwargs = ""
  c.train.lora_targets = ("q", "v")
  c.train.lora_rank = 8
  c.train.lora_alpha = 16.0
  c.train.total_steps = 30 if smoke else 400
  c.train.batch_size = 16 if smoke else 32
  c.train.lr = 1e-3 if smoke else 5e-4
  c.train.probe_steps = 300
  c.train.probe_lr = 1e-2
  common = load_common()
  # Every classifier training's optimizer (finetune, lora, top, top_lora; steps train.total_steps) and the
  # probe's (probe_steps); their `lr` is train.lr / train.probe_lr (the same setting: change either).
  warmup = default_warmup_steps(c.train.get_ref("total_steps"))  # max(total_steps // 20, 1), follows it
  c.train.optimizer = common.optimizer(c.train.get_ref("lr"), warmup_steps=warmup)  # AdamW, cosine to 10 %
  c.train.probe_optimizer = common.optimizer(c.train.get_ref("probe_lr"), warmup_steps=0, schedule="constant",
                                             weight_decay=0.0, b2=0.999, clip_norm=0.0)
  c.train.loss_kwargs = ml_collections.ConfigDict({
    "logconf": {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": "reference"},
    "product": {"alpha": 1.0, "beta": 1.0},
  })
  c.total_steps = c.train.get_ref("total_steps")  # the sweep equivalent: steps of each training
  c.checkpoint_every_steps = 0
  return c
