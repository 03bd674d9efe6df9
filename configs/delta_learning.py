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

from w2s_jax.config_files import load_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = ml_collections.ConfigDict()
  c.task = "delta_learning"
  c.seed = 0
  common = load_common()
  c.data = ml_collections.ConfigDict({"task": "chain_sum", "seed": 0,
                                      "eval_size": 16 if smoke else 200})  # held-out problems for the table
  c.tokenizer = "bytes"
  c.vocab_size = 512
  c.seq_len = 256
  # prompts the weak / weaker models answer (the pairs); smoke: as many as held-out problems, so sampling
  # both sets is one batch shape (one compiled sampler)
  c.train_prompts = c.data.eval_size if smoke else 512
  c.max_new_tokens = 96 if smoke else 128
  c.sample_temperature = 0.7

  # The SFT'd models: preset, SFT steps and optimizer (the same SFT data and batch; warmup 5 % of the steps).
  # smoke: a constant rate after warmup, so the three SFT runs, which differ only in steps, are one program.
  c.models = ml_collections.ConfigDict()
  for name, steps in (("weaker", 4 if smoke else 150), ("weak", 8 if smoke else 250),
                      ("student", 12 if smoke else 400)):
    c.models[name] = ml_collections.ConfigDict({
      "preset": "tiny", "total_steps": steps,
      "optimizer": common.optimizer(3e-3, warmup_steps=max(steps // 20, 1),
                                    schedule="constant" if smoke else "cosine")})
  c.sft = ml_collections.ConfigDict({"batch_size": 16, "train_size": 200 if smoke else 5000})

  # Training the student: DPO on the delta pairs vs SFT on the chosen side, same steps and batch.
  c.total_steps = 4 if smoke else 150
  c.batch_size = 8
  c.checkpoint_every_steps = c.get_ref("total_steps")
  warmup = max(c.total_steps // 20, 1)
  c.dpo = ml_collections.ConfigDict({"beta": 0.1})
  c.dpo.optimizer = common.optimizer(1e-4, warmup_steps=warmup, weight_decay=0.0)
  c.sft_on_chosen = ml_collections.ConfigDict()
  c.sft_on_chosen.optimizer = common.optimizer(1e-4, warmup_steps=warmup, weight_decay=0.0)
  c.eval_pairs_batches = 2 if smoke else 8
  return c
