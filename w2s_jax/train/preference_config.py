"""The shared config of the `preference` task (`w2s_jax.train.preference_tasks`).

The configs `configs/{dpo,ipo,simpo,orpo,kto,reward_model}_tiny.py` differ only in their objective and
learning rate; this builds the rest, so that every key is documented once.

DATA (which pairs each arg uses):
  smoke: NOT sampled. `chain_sum` worked solutions (chosen) vs the same solution with a wrong final
    answer or cut off before its answer (rejected), both checked with reasoning-gym's scorer, from a
    randomly initialised tiny model. Seconds on CPU.
  full (no arg): SAMPLED. The tiny model is first fine-tuned on `chain_sum` worked solutions (cached),
    then 8 solutions per prompt are sampled from it at temperature 1 and scored by the task's scorer;
    pairs are correct (chosen) vs incorrect (rejected) completions of the same prompt (KTO: every
    scored completion is one unpaired example). The SFT model is the start (and the reference, where
    the loss has one).
EXPECTED: `eval_reward_accuracy` in metrics.jsonl (share of held-out pairs with a positive implicit
  reward margin) ends above `eval_reward_accuracy_start` (its value before training).
"""

from __future__ import annotations

import ml_collections

from w2s_jax.config_files import load_common
from w2s_jax.train.config_lib import distributed_defaults, optimizer_section, train_defaults


def preference_config(arg: str | None, *, loss: dict, lr: float = 1e-3, full_lr: float = 3e-5,
                      model: dict | None = None) -> ml_collections.ConfigDict:
  """A `preference` task config.

  Args:
    arg: "smoke" (seconds on CPU: worked-solution vs wrong-answer pairs, a randomly initialised start
      model) or None/"" (the full run: the tiny model fine-tuned on worked solutions, then pairs of its
      own sampled solutions scored by the task's scorer).
    loss: the `loss` section: `name` plus the loss's keyword arguments.
    lr: the smoke run's peak learning rate.
    full_lr: the full run's peak learning rate.
    model: keys of the `model` section to override (e.g. {"head": "value"}).
  """
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = train_defaults(total_steps=40 if smoke else 1000, batch_size=8,  # pairs (2 x 8 rows); KTO: 16 rows
                     lr=lr if smoke else full_lr)
  c.task = "preference"
  c.log_every_steps = 1 if smoke else 10
  c.eval_every_steps = 10 if smoke else 100
  c.eval_at_start = True  # evaluate the start model too: eval_loss_start, eval_reward_accuracy_start
  c.shared_prompt = True  # pairwise losses: each pair's prompt runs once (exact; preference_shared.py)
  c.checkpoint_every_steps = 20 if smoke else 200
  c.keep_checkpoints = 2
  c.cpu_devices = 0
  c.optimizer.update(warmup_steps=2 if smoke else 50, weight_decay=0.0)
  c.distributed = distributed_defaults()

  # The shared model section (configs/common.py): preset, vocab, overrides, the dtype / attention / remat
  # shortcuts and `lora`.
  c.model = load_common().model("tiny", max_seq_len=512)
  c.model.init = "scratch" if smoke else "sft"  # the start model is also the reference model
  c.model.head = "classifier"  # reward_model only: classifier | value
  # The "sft" start: fine-tuned on the task's worked solutions (cached; `train.pretrain`), with the SFT
  # loop's optimizer (AdamW, cosine decay to 10 %, warmup 5 % of the steps).
  c.model.sft = ml_collections.ConfigDict({
    "total_steps": 1500, "batch_size": 16, "train_size": 5000,
    "optimizer": optimizer_section(3e-3, warmup_steps=75),
  })
  c.model.update(model or {})

  c.data = ml_collections.ConfigDict()
  c.data.task = "chain_sum"
  c.data.source = "perturbed" if smoke else "sampled"  # see the module docstring
  c.data.tokenizer = "bytes"
  c.data.seq_len = 256
  c.data.train_size = 256 if smoke else 5000  # prompts
  c.data.eval_size = 64 if smoke else 500
  c.data.seed = 0
  c.data.perturbations = ("wrong_answer", "truncated")  # source "perturbed": flaws cycled over problems
  c.data.samples_per_prompt = 8
  c.data.max_pairs_per_prompt = 4
  c.data.max_new_tokens = 128
  c.data.temperature = 1.0
  c.data.correct_at = 1.0  # a completion is correct when the scorer gives at least this
  c.data.eval_batches = 4 if smoke else 32
  c.data.cache_dir = ""  # "" = $W2S_JAX_CACHE/preference/<hash of data+model+seed>
  # source "files": your own {"prompt", "chosen", "rejected"} records (comma-separated .jsonl/.parquet)
  c.data.train_files = ""
  c.data.eval_files = ""
  c.data.skip_bad_records = False  # True: skip and count bad records instead of stopping

  c.loss = ml_collections.ConfigDict(loss)

  return c
