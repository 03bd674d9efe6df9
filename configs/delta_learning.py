"""Delta learning (Geng et al. 2025): DPO on pairs whose chosen side comes from a weak model and whose
rejected side from an even weaker one, applied to a stronger student; compared with SFT on the chosen side.

COMMAND:
  python -m w2s_jax.main --config=configs/delta_learning.py:smoke --workdir=/tmp/delta_smoke
  python -m w2s_jax.main --config=configs/delta_learning.py --workdir=runs/delta_learning

Models (all the byte-level decoder fine-tuned on `chain_sum` worked solutions, cached by config hash):
`weaker` and `weak` are SFT'd for fewer steps than the `student`. The weak and weaker models each sample one
solution per training prompt (temperature `sample_temperature`); a pair is (prompt, weak's solution,
weaker's solution), with no correctness filter, as in the paper. The student is then trained (a) by DPO
on those pairs with itself as reference and (b) by SFT on the weak model's solutions alone, for the same
number of steps; every model's held-out accuracy is greedy decoding scored by reasoning-gym's scorer.
smoke: a few SFT steps and a handful of prompts (the pipeline in about a minute; the accuracies mean nothing).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = ml_collections.ConfigDict()
  c.task = "delta_learning"
  c.seed = 0
  c.data_task = "chain_sum"
  c.data_seed = 0
  c.tokenizer = "bytes"
  c.vocab_size = 512
  c.seq_len = 256
  c.train_prompts = 32 if smoke else 512  # prompts the weak / weaker models answer (the pairs)
  c.eval_problems = 16 if smoke else 200  # held-out problems for the accuracy table
  c.max_new_tokens = 96 if smoke else 128
  c.sample_temperature = 0.7

  # The SFT'd models: preset and SFT steps (the same SFT data, batch and learning rate).
  c.models = ml_collections.ConfigDict({
    "weaker": {"preset": "tiny", "steps": 4 if smoke else 150},
    "weak": {"preset": "tiny", "steps": 8 if smoke else 250},
    "student": {"preset": "tiny", "steps": 12 if smoke else 400},
  })
  c.sft = ml_collections.ConfigDict({"batch_size": 16, "lr": 3e-3, "train_size": 200 if smoke else 5000})

  # Training the student: DPO on the delta pairs vs SFT on the chosen side, same steps and batch.
  c.total_steps = 4 if smoke else 150
  c.batch_size = 8
  c.checkpoint_every_steps = c.get_ref("total_steps")
  c.dpo = ml_collections.ConfigDict({"beta": 0.1, "lr": 1e-4})
  c.sft_on_chosen = ml_collections.ConfigDict({"lr": 1e-4})
  c.eval_pairs_batches = 2 if smoke else 8
  return c
