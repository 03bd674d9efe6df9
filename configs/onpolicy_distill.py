"""On-policy distillation (GKD / reverse KL to a teacher on student samples), task "onpolicy_distill".

COMMAND:
  python -m w2s_jax.main --config=configs/onpolicy_distill.py:smoke --workdir=/tmp/opd_smoke
  python -m w2s_jax.main --config=configs/onpolicy_distill.py --workdir=runs/opd          # strong → weak
  python -m w2s_jax.main --config=configs/onpolicy_distill.py:w2s --workdir=runs/opd_w2s  # weak → strong
Both models are SFT'd first on `chain_sum` worked solutions (the `teacher` / `student` sections: preset +
SFT budget; `sft.workdir` shares an SFT model between runs, same settings required), then the student is
distilled on its own samples (`loss.name`: `full` = generalized JSD_β of whole distributions,
β = 1 reverse KL, β = 0 forward KL; `sampled` = single-sample reverse-KL advantages; λ = on_policy_frac).
Default (strong → weak): teacher = the tiny decoder SFT'd 1,500 steps (configs/rl_base.py's SFT phase,
so `--config.teacher.sft.workdir` can point at an RL run's SFT folder), student = the smaller `ladder-0`
decoder SFT'd 300 steps. Arg `w2s`: the teacher is a 300-step `ladder-0`, the student the tiny decoder
with a 150-step SFT start. `smoke` (also `w2s_smoke`): seconds-long SFTs and 3 iterations.
Arg `gcd` (configs/grpo_gain.py's task, where these models are above the floor), strong → weak:
  python -m w2s_jax.main --config=configs/onpolicy_distill.py:gcd --workdir=runs/opd_gcd
teacher = grpo_gain's 600-step tiny `gcd` SFT (held-out pass@1 ~22 %; `teacher.sft.workdir` reuses
runs/grpo_gain/sft, or trains it there), student = the same tiny decoder with only a 150-step SFT;
40 iterations of B 8 × G 8 student samples of up to 200 tokens, reverse KL (`full`, β = 1), lr 5e-4.
Arg `gcd_w2s` (weak → strong, same schedule): teacher = that 150-step tiny student (its folder
runs/opd_gcd/student/sft), student = `ladder-1` with configs/w2sr.py:gcd's 200-step start
(runs/w2sr_gcd/strong_start); either folder is trained there when missing.
"""

import ml_collections

from w2s_jax.config_files import load_config

ARGS = ("", "smoke", "w2s", "w2s_smoke", "gcd", "gcd_w2s")
# rl_base's sections this pipeline reads as they are (its `model` and `sft` template `teacher` / `student`).
SHARED = ("seed", "checkpoint_every_steps", "keep_checkpoints", "max_nonfinite_streak", "cpu_devices", "mesh",
          "sharding", "distributed", "data", "train", "eval", "optimizer")


def _model(base: ml_collections.ConfigDict, preset: str, steps: int) -> ml_collections.ConfigDict:
  """A `teacher` / `student` section: rl_base's `model` with `preset` and its `sft` phase with `steps`."""
  m = ml_collections.ConfigDict()
  m.model = ml_collections.ConfigDict(base.model.to_dict())
  m.model.preset = preset
  m.sft = ml_collections.ConfigDict(base.sft.to_dict())  # rl.sft_init.run_sft's keys
  m.sft.total_steps = steps
  m.sft.optimizer.warmup_steps = min(int(base.sft.optimizer.warmup_steps), steps)
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or ""
  if arg not in ARGS:
    raise ValueError(f"unknown config arg {arg!r}; use one of {ARGS[1:]} or nothing")
  smoke, w2s = "smoke" in arg, "w2s" in arg
  base = load_config("rl_base", "smoke" if smoke else None)
  c = ml_collections.ConfigDict({key: base[key] for key in SHARED})
  c.task = "onpolicy_distill"
  c.total_steps = 3 if smoke else 100  # distillation iterations

  if w2s:  # weak teacher, strong student with a short start
    c.teacher = _model(base, "ladder-0", 40 if smoke else 300)
    c.student = _model(base, "tiny", 20 if smoke else 150)
  else:  # strong teacher (rl_base's SFT phase; in smoke exactly rl_base's smoke one), weak student
    c.teacher = _model(base, "tiny", 60 if smoke else 1500)
    c.student = _model(base, "ladder-0", 20 if smoke else 300)

  # rl_base's B, G, N and temperature (sampling and loss temperature); its tree and top-p keys are RL-only.
  c.rollout = ml_collections.ConfigDict(
    {k: base.rollout[k] for k in ("prompts_per_step", "group_size", "max_new_tokens", "temperature")})
  c.rollout.prompts_per_step = 4 if smoke else 8  # B

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "full"  # full | sampled (w2s_jax.w2s.onpolicy_distill.ESTIMATORS)
  c.loss.beta = 1.0  # generalized JSD β: 1 = reverse KL(S‖T), 0 = forward KL(T‖S)
  c.loss.reduction = "token-mean"
  c.distill = ml_collections.ConfigDict()
  c.distill.on_policy_frac = 1.0  # GKD λ: share of iterations on student samples (else gold solutions)

  c.train.minibatch_size = 8 if smoke else 16

  c.eval.samples = 4 if smoke else 8  # n per held-out problem (0 = no evaluation)
  c.eval.ks = [1, 2, 4] if smoke else [1, 2, 4, 8]
  c.eval_every_steps = 0 if smoke else 50  # 0 = before and after only

  c.optimizer.lr = 1e-3 if smoke else 3e-4

  if arg.startswith("gcd"):
    _gcd(c, w2s, base)
  return c


def _gcd(c: ml_collections.ConfigDict, w2s: bool, base: ml_collections.ConfigDict) -> None:
  """Moves the config to reasoning-gym `gcd` with configs/grpo_gain.py's lengths (strong → weak, or w2s)."""
  c.data.task = "gcd"
  c.data.max_prompt_len = 136  # gcd prompts are 128–129 tokens with BOS
  c.rollout.max_new_tokens = 200  # 99 % of worked solutions fit in 196 tokens
  # Exactly grpo_gain's SFT phase, so its folder is reused (run_sft refuses a folder of other settings).
  c.teacher = _model(base, "tiny", 600)
  c.teacher.sft.seq_len = 320
  c.teacher.sft.workdir = "runs/grpo_gain/sft"
  c.student = _model(base, "tiny", 150)  # the same decoder, a quarter of the teacher's SFT
  c.student.sft.seq_len = 320
  c.student.sft.optimizer.warmup_steps = 15
  if w2s:  # the weak 150-step tiny teaches configs/w2sr.py:gcd's ladder-1 start (SFT settings equal)
    c.teacher = c.student
    c.teacher.sft.workdir = "runs/opd_gcd/student/sft"
    c.student = _model(base, "ladder-1", 200)
    c.student.sft.update(dict(seq_len=320, workdir="runs/w2sr_gcd/strong_start"))
    c.student.sft.optimizer.warmup_steps = 20
  c.total_steps = 40
  c.checkpoint_every_steps = 10
  c.eval_every_steps = 0  # before and after only
  c.optimizer.lr = 5e-4
