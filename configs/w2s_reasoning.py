"""Weak-to-Strong Reasoning (Yang et al. 2024): Stage-I agreement SFT, Stage-II self-consistency DPO.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_reasoning.py:smoke --workdir=/tmp/w2s_reasoning
  python -m w2s_jax.main --config=configs/w2s_reasoning.py --workdir=runs/w2s_reasoning
Pipeline and models: `w2s_jax/recipes/w2s_reasoning.py`. The task is reasoning-gym `chain_sum` with 2–3
terms of 1–2 digits (`data.options`); the weak model is the `tiny` preset SFT'd on the gold set, the
strong one `ladder-2` (vocab 512) given a short SFT on `strong.start_examples` gold examples.
Arg `smoke`: tiny sizes and steps; the strong start is trained exactly as the weak model (so they agree on
every item and every stage runs); about a minute on a quiet CPU.
Arg `gcd` (configs/grpo_gain.py's task, where these models are above the floor):
  nice -n 10 python -m w2s_jax.main --config=configs/w2s_reasoning.py:gcd --workdir=runs/w2s_reasoning_gcd
the weak model is grpo_gain's 600-step tiny `gcd` SFT (held-out pass@1 ~22 %; `weak.sft.workdir` reuses
runs/grpo_gain/sft, or trains it there), the strong start configs/w2sr.py:gcd's 200-step `ladder-1` SFT
(runs/w2sr_gcd/strong_start; ~16 %); both SFT'd on the first 20,000 `gcd` train problems, so the pool is
fresh and the test set is those runs' held-out split (first 128 problems); naive W2S and the gold
ceiling are on. 14 min wall on the loaded 2-core CPU when both SFT folders exist.
EXPECTED (full): `results.json` lists held-out pass@1 of weak, strong_start, stage1, stage2,
naive_w2s and ceiling, the agreement filter's label precision against the unfiltered weak labels', and
PGR of each stage.
"""

import ml_collections

from w2s_jax.config_files import load_common
from w2s_jax.train.config_lib import distributed_defaults


def _run(steps: int, batch_size: int, lr: float, weight_decay: float = 0.01) -> ml_collections.ConfigDict:
  """A training stage: steps, batch and its optimizer (AdamW, cosine, warmup 5 % of the steps)."""
  optimizer = load_common().optimizer(lr, warmup_steps=max(steps // 20, 1), weight_decay=weight_decay)
  return ml_collections.ConfigDict({"total_steps": steps, "batch_size": batch_size, "optimizer": optimizer})


def _model(preset: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"preset": preset, "vocab_size": 512, "overrides": {"max_seq_len": 256}})


def _sft_phase(preset: str, steps: int, warmup: int, workdir: str) -> ml_collections.ConfigDict:
  """A model + an rl_base-style `sft` section (`rl.sft_init.run_sft`), as grpo_gain / w2sr:gcd set it."""
  m = ml_collections.ConfigDict()
  m.model = ml_collections.ConfigDict({"preset": preset, "vocab_size": 512,
                                       "overrides": ml_collections.ConfigDict({"max_seq_len": 512})})
  m.sft = load_common().sft_phase(total_steps=steps, batch_size=16, seq_len=320, lr=3e-3, warmup_steps=warmup,
                                  workdir=workdir)
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke", "gcd"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke', 'gcd' or nothing")
  c = ml_collections.ConfigDict()
  c.task = "w2s_reasoning"
  c.seed = 0
  c.cpu_devices = 0
  c.total_steps = 0  # a pipeline: each stage has its own `total_steps`
  c.checkpoint_every_steps = 0  # each stage checkpoints once, at its end

  c.data = ml_collections.ConfigDict()
  c.data.task = "chain_sum"
  c.data.options = ml_collections.ConfigDict(  # reasoning-gym difficulty knobs
    {"min_terms": 2, "max_terms": 2 if smoke else 3, "min_digits": 1, "max_digits": 1 if smoke else 2})
  c.data.tokenizer = "bytes"
  c.data.gold_size = 64 if smoke else 400  # worked solutions: the weak model's SFT set
  c.data.pool_size = 48 if smoke else 400  # unlabeled questions the strong model learns from
  c.data.eval_size = 16 if smoke else 100  # held-out problems
  c.data.seed = 0
  c.data.seq_len = 256
  c.data.max_prompt_len = 96  # prompt slots (BOS + "Question: …\nSolution:\n")
  c.data.max_new_tokens = 48

  c.weak = _run(30 if smoke else 200, 8 if smoke else 16, 3e-3)
  c.weak.model = _model("tiny")
  c.strong = ml_collections.ConfigDict()
  c.strong.model = _model("tiny" if smoke else "ladder-2")
  # The short-SFT stand-in for few-shot prompting. In smoke the strong start is trained exactly as the weak
  # model (same preset, data, seed and steps), so the two agree everywhere and every stage runs.
  c.strong.start_examples = 64 if smoke else 200
  c.strong.start = _run(30 if smoke else 60, 8 if smoke else 16, 3e-3)

  c.stage1 = _run(10 if smoke else 150, 4 if smoke else 16, 1e-3)
  c.stage1.sources = "both"  # weak | strong | both: whose solutions of the agreed items are trained on

  c.stage2 = _run(4 if smoke else 50, 4 if smoke else 8, 1e-4, weight_decay=0.0)  # DPO
  c.stage2.samples = 4  # K samples per pool question
  c.stage2.temperature = 1.0
  c.stage2.min_share = 0.25 if smoke else 0.5  # majority vote share at which its answer is trusted
  c.stage2.max_pairs_per_prompt = 2
  c.stage2.include_unanswered = smoke  # may a sample with no stated answer be the rejected side
  c.stage2.loss = ml_collections.ConfigDict({"name": "dpo", "beta": 0.1, "label_smoothing": 0.0})

  c.baselines = ml_collections.ConfigDict({"naive_w2s": not smoke, "ceiling": True})

  c.eval = ml_collections.ConfigDict()
  c.eval.samples = 2 if smoke else 4  # n per held-out problem; pass@1 = mean c/n
  c.eval.temperature = 1.0
  c.eval.max_new_tokens = 48
  c.eval.seed = 12345

  c.distributed = distributed_defaults()
  if arg == "gcd":
    _gcd(c)
  return c


def _gcd(c: ml_collections.ConfigDict) -> None:
  """Moves the config to reasoning-gym `gcd` with grpo_gain's weak SFT and w2sr:gcd's strong start."""
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # the SFT phase's (run_sft)
  c.sharding = "dp"
  d = c.data
  d.task = "gcd"
  del d["options"]  # the task's default difficulty, as the shared SFT folders were trained on
  d.train_size = 20000  # the SFT phase's train problems (grpo_gain, w2sr:gcd); pool and test avoid them
  d.gold_size = 0  # no gold set: both models come from the SFT phase
  d.pool_size = 384
  d.eval_size = 128  # = grpo_gain / w2sr:gcd's held-out problems
  d.seq_len = 320  # prompt + solution: 99 % of pairs fit
  d.max_prompt_len = 136  # gcd prompts are 128–129 tokens with BOS
  d.max_new_tokens = 200  # 99 % of worked solutions fit in 196 tokens
  # Exactly the SFT phases of grpo_gain and w2sr:gcd, so their folders are reused (run_sft refuses a
  # folder trained with other settings).
  c.weak = _sft_phase("tiny", 600, 100, "runs/grpo_gain/sft")
  c.strong = _sft_phase("ladder-1", 200, 20, "runs/w2sr_gcd/strong_start")

  c.stage1 = _run(60, 16, 1e-3)  # w2sr:gcd's SFT on weak solutions: 60 steps, batch 16, lr 1e-3
  c.stage1.sources = "both"
  c.stage2 = _run(40, 8, 1e-4, weight_decay=0.0)
  c.stage2.samples = 4
  c.stage2.temperature = 1.0
  c.stage2.min_share = 0.5
  c.stage2.max_pairs_per_prompt = 2
  c.stage2.include_unanswered = False
  c.stage2.loss = ml_collections.ConfigDict({"name": "dpo", "beta": 0.1, "label_smoothing": 0.0})
  # naive_w2s (the start SFT'd on every weak solution) separates the agreement filter from plain training
  # on the weak labels; ceiling = the start SFT'd on the pool's gold solutions (same steps).
  c.baselines = ml_collections.ConfigDict({"naive_w2s": True, "ceiling": True})
  c.eval.samples = 8  # as grpo_gain / w2sr:gcd report pass@1
  c.eval.max_new_tokens = 200
