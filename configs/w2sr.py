"""W2SR: SFT of a strong student on a weak reasoner's solutions vs GRPO from the same start (task "w2sr").

COMMAND:
  python -m w2s_jax.main --config=configs/w2sr.py:smoke --workdir=/tmp/w2sr_smoke
  python -m w2s_jax.main --config=configs/w2sr.py --workdir=runs/w2sr
The strong student and the RL arm are configs/grpo_tiny.py (GRPO, k3 KL in the loss) with a larger model
(`model`) and a short SFT start (`sft`); the weak reasoner (`weak`) is the tiny decoder with rl_base's
1,500-step SFT (its `sft.workdir` can point at an RL run's SFT folder). `w2sr`: how many train problems
both arms see, weak samples per problem, correct-only filtering and the SFT on the weak solutions.
Reported: held-out pass@1 of weak / start / W2SR / RL and the share of RL's gain W2SR recovers.
Arg `smoke`: a strong tiny model over a weaker `ladder-0` reasoner, seconds-long phases.
Arg `gcd` (configs/grpo_gain.py's task, where these models are above the floor):
  python -m w2s_jax.main --config=configs/w2sr.py:gcd --workdir=runs/w2sr_gcd
the weak reasoner is grpo_gain's 600-step tiny `gcd` SFT (held-out pass@1 ~22 %; `weak.sft.workdir`
reuses runs/grpo_gain/sft, or trains it there), the strong student `ladder-1` from a 200-step `gcd`
SFT start; GRPO with grpo_gain's settings (B 8, G 8, lr 2e-4, 200 new tokens), 96 problems (12 iterations).
"""

import ml_collections

from w2s_jax.config_files import load_common, load_config

common = load_common()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke", "gcd"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke', 'gcd' or nothing")
  if arg == "gcd":
    return _gcd()
  smoke = arg == "smoke"
  c = load_config("grpo_tiny", "smoke" if smoke else None)
  c.task = "w2sr"
  c.model.preset = "tiny" if smoke else "ladder-1"  # the strong student (3 layers, d_ff 192 vs tiny's 2, 128)
  # Its short SFT start (shared with the RL arm); in smoke exactly rl_base's smoke SFT phase (60 steps), so
  # an RL smoke run's SFT folder can be reused (copied to WORKDIR/strong_start, or given as `sft.workdir`).
  c.sft.total_steps = 60 if smoke else 200
  c.sft.optimizer.warmup_steps = 10 if smoke else 20
  c.rollout.prompts_per_step = 4 if smoke else 8
  c.rollout.group_size = 4 if smoke else 8
  c.train.minibatch_size = 8 if smoke else 16
  c.checkpoint_every_steps = 2 if smoke else 8
  c.eval.samples = 4 if smoke else 8
  c.eval.ks = [1, 2, 4] if smoke else [1, 2, 4, 8]
  c.eval_every_steps = 0
  c.data.eval_size = 8 if smoke else 64

  c.weak = ml_collections.ConfigDict()
  c.weak.model = ml_collections.ConfigDict({"preset": "ladder-0" if smoke else "tiny", "vocab_size": 512,
                                            "overrides": ml_collections.ConfigDict({"max_seq_len": 512})})
  # smoke: 20 steps, the SFT phase of configs/onpolicy_distill.py:smoke's student (same settings)
  c.weak.sft = common.sft_phase(total_steps=20 if smoke else 1500, batch_size=8 if smoke else 16, seq_len=256,
                                lr=3e-3, warmup_steps=10 if smoke else 100)

  c.w2sr = ml_collections.ConfigDict()
  c.w2sr.problems = 8 if smoke else 64  # train problems both arms see (a multiple of prompts_per_step)
  c.w2sr.samples_per_problem = 4  # weak solutions per problem
  c.w2sr.temperature = 1.0  # the weak reasoner's sampling temperature
  c.w2sr.correct_only = False  # True: keep only the weak solutions the task's scorer accepts
  c.w2sr.sft = ml_collections.ConfigDict()
  c.w2sr.sft.total_steps = 10 if smoke else 100
  c.w2sr.sft.batch_size = 8 if smoke else 16
  c.w2sr.sft.optimizer = common.optimizer(1e-3, warmup_steps=2 if smoke else 10)
  return c


def _gcd() -> ml_collections.ConfigDict:
  """W2SR on reasoning-gym `gcd` (configs/grpo_gain.py's task, SFT and GRPO settings)."""
  c = load_config("grpo_gain")
  c.task = "w2sr"
  c.model.preset = "ladder-1"  # the strong student
  c.sft.total_steps = 200  # its short SFT start (shared with the RL arm), in WORKDIR/strong_start
  c.sft.optimizer.warmup_steps = 20
  c.checkpoint_every_steps = 4
  c.eval_every_steps = 0

  c.weak = ml_collections.ConfigDict()
  c.weak.model = ml_collections.ConfigDict({"preset": "tiny", "vocab_size": 512,
                                            "overrides": ml_collections.ConfigDict({"max_seq_len": 512})})
  # Exactly grpo_gain's SFT phase, so its folder is reused (run_sft refuses a folder of other settings).
  c.weak.sft = common.sft_phase(total_steps=600, batch_size=16, seq_len=320, lr=3e-3, warmup_steps=100,
                                workdir="runs/grpo_gain/sft")

  c.w2sr = ml_collections.ConfigDict()
  c.w2sr.problems = 96  # 12 GRPO iterations of B = 8
  c.w2sr.samples_per_problem = 4
  c.w2sr.temperature = 1.0
  c.w2sr.correct_only = False
  c.w2sr.sft = ml_collections.ConfigDict(dict(total_steps=60, batch_size=16))
  c.w2sr.sft.optimizer = common.optimizer(1e-3, warmup_steps=6)
  return c
