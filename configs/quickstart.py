"""The main job: the whole weak-to-strong sweep, sized for a 2-core CPU.

COMMAND:
  python -m w2s_jax.main --config=configs/quickstart.py:smoke --workdir=runs/quickstart_smoke   # < 60 s
  python -m w2s_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
Pretrains the ladder once (cached under ~/.cache/w2s_jax), trains every size on ground truth (the
ceilings) and every weak -> strong pair with the xent and logconf losses, then prints the ladder and
results tables (PGR medians with 95 % bootstrap CIs over seeds) and writes results.json and plots/.
It is `configs/w2s_sweep.py` with the sizes below; every key can be overridden with --config.x=y.
The task is `chain_sum_3x1` verification ("Question: 7 - 9 + 4 =\nAnswer: 3" -> wrong; 1,600 train
questions with 4 candidate answers each, 500 test questions with one), and the ladder
is pretrained on that task's worked problems (`ladder.corpus = "w2s:chain_sum_3x1"`: the 1,600 problems of
a question pool disjoint from the W2S sets), so a bigger rung knows more arithmetic than a smaller one.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("w2s_sweep", "smoke" if smoke else None)
  c.data.task = "chain_sum_3x1"
  c.data.max_len = 40  # "Question: 38 + 57 =\nAnswer: 131" is 32 bytes
  c.ladder.corpus = "w2s:chain_sum_3x1"
  c.ladder.corpus_options = ml_collections.ConfigDict({"problems": 300 if smoke else 1600})
  c.ladder.seq_len = 64
  # four candidate answers per train question (each right or wrong by its own coin), the halves split by
  # question: 4x the examples for the same questions. 1 candidate: PGR -0.35; 8: 0.00 (README)
  c.data.candidates = 4
  if smoke:
    c.train.steps = 20
    c.ladder.steps = 20
    c.data.n_train = 64
    c.data.n_test = 96
  else:
    c.seeds = (0, 1, 2, 3, 4, 5)  # seeds 0-2 alone gave PGR xent 0.22 [0.14, 0.24]; six: 0.10 [-0.05, 0.23]
    c.losses = ("xent", "logconf")
    c.ladder.sizes = ("ladder-0", "ladder-1")
    c.ladder.steps = 1200  # 600: ceilings 55.4 vs 61.2 % (gap 5.8); 1200: 58.4 vs 68.8 % (gap 10.4)
    c.ladder.batch_size = 16
    c.data.n_train = 1600
    c.data.n_test = 500
    c.train.steps = 300
  return c
