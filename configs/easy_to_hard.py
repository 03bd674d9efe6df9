"""Easy-to-hard (Sun et al. 2024): a verifier trained on EASY problems re-ranks a policy's HARD samples.

COMMAND:
  python -m w2s_jax.main --config=configs/easy_to_hard.py:smoke --workdir=/tmp/easy_to_hard
  python -m w2s_jax.main --config=configs/easy_to_hard.py --workdir=runs/easy_to_hard
Pipeline: `w2s_jax/recipes/easy_to_hard.py`. reasoning-gym `chain_sum` with 2–3 terms of 1–2 digits, split by
the number of terms: 2 = easy, 3 = hard. The policy (`tiny`) is SFT'd on worked solutions of both levels
(`policy.sft_levels`; an easy-only policy at this scale solves no hard problem, leaving nothing to
re-rank); the verifier sees labelled samples of EASY problems only.
Arg `smoke`: a few problems and steps; about a minute on a quiet CPU.
Arg `gcd` (where the tiny policy is above the floor, ~22 % pass@1 after configs/grpo_gain.py's SFT):
  cp -r runs/grpo_gain/sft runs/easy_to_hard_gcd/policy_sft   # optional: reuse that SFT (else trained)
  python -m w2s_jax.main --config=configs/easy_to_hard.py:gcd --workdir=runs/easy_to_hard_gcd
reasoning-gym `gcd` (default options: two numbers of 1–1000), split by instance size, the bigger
number (`max:numbers`): <= 500 = easy, >= 700 = hard (501–699 dropped). The policy is
grpo_gain's 600-step SFT on the default distribution; the verifier is trained on EASY samples only; then
the RL stage (`rl`): GRPO (grpo_gain's settings) with reward = the verifier's score only, and the same
budget with the gold reward as a control; held-out easy/hard pass@1 before and after each.
Arg `gcd_smoke`: the same pipeline in miniature (grpo_gain's smoke SFT, 2 RL iterations per arm).
EXPECTED (full): `results.json` with, for easy and hard held-out problems, the accuracy of random pick,
majority vote, verifier best-of-N, verifier-weighted vote and oracle best-of-N (pass@N), and the
verifier's AUROC.
"""

import ml_collections

from w2s_jax.config_files import load_common
from w2s_jax.train.config_lib import distributed_defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke", "gcd", "gcd_smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke', 'gcd', 'gcd_smoke' or nothing")
  if arg in ("gcd", "gcd_smoke"):
    return _gcd(arg == "gcd_smoke")
  smoke = arg == "smoke"
  c = ml_collections.ConfigDict()
  c.task = "easy_to_hard"
  c.seed = 0
  c.cpu_devices = 0
  c.total_steps = 0  # a pipeline: the policy and the verifier have their own `total_steps`
  c.checkpoint_every_steps = 0  # each run checkpoints once, at its end

  c.data = ml_collections.ConfigDict()
  c.data.task = "chain_sum"
  c.data.options = ml_collections.ConfigDict(  # reasoning-gym difficulty knobs
    {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2})
  c.data.difficulty_key = "num_terms"  # a key of the task's metadata
  c.data.easy_max = 2  # easy: difficulty_key <= easy_max
  c.data.hard_min = 3  # hard: difficulty_key >= hard_min
  c.data.tokenizer = "bytes"
  c.data.sft_size = 64 if smoke else 400  # problems of each level for the policy's SFT
  c.data.verifier_size = 24 if smoke else 200  # easy problems whose samples train the verifier
  c.data.eval_size = 8 if smoke else 100  # held-out problems of each level
  c.data.seed = 0
  c.data.draw_factor = 3  # problems drawn per wanted problem of each level (the rest fall outside)
  c.data.seq_len = 256
  c.data.max_prompt_len = 96
  c.data.max_new_tokens = 48

  c.policy = ml_collections.ConfigDict()
  c.policy.model = ml_collections.ConfigDict({"preset": "tiny", "vocab_size": 512,
                                              "overrides": {"max_seq_len": 256}})
  c.policy.sft_levels = "easy,hard"  # "easy" for the paper's easy-only SFT
  c.policy.total_steps = 16 if smoke else 300
  c.policy.batch_size = 8 if smoke else 16
  c.policy.optimizer = load_common().optimizer(3e-3, warmup_steps=max(c.policy.total_steps // 20, 1))

  c.verifier = ml_collections.ConfigDict()
  c.verifier.samples_per_problem = 4  # policy samples per easy problem, scorer-labelled
  c.verifier.total_steps = 20 if smoke else 150
  c.verifier.batch_size = 8 if smoke else 16
  c.verifier.lr = 5e-4

  c.sampling = ml_collections.ConfigDict()
  c.sampling.samples = 4 if smoke else 8  # N per held-out problem
  c.sampling.temperature = 1.0

  c.rl = ml_collections.ConfigDict()
  c.rl.enabled = False  # the RL stage (see arg `gcd`): GRPO with the verifier's reward
  c.rl.base = "grpo_gain"  # the RL config (configs/NAME.py) whose model, SFT phase and GRPO settings run
  c.rl.base_arg = ""
  c.rl.sft_workdir = ""  # the policy's SFT folder ("" = WORKDIR/policy_sft)
  c.rl.total_steps = 0
  c.rl.prompts_per_step = 8  # B
  c.rl.group_size = 8  # G
  c.rl.minibatch_size = 32
  c.rl.lr = 2e-4
  c.rl.gold_control = True  # also the same budget with the gold reward

  c.distributed = distributed_defaults()
  return c


def _gcd(smoke: bool) -> ml_collections.ConfigDict:
  """Easy-to-hard on reasoning-gym `gcd` with the RL stage (configs/grpo_gain.py's policy and GRPO)."""
  c = get_config("smoke" if smoke else None)
  c.data.task = "gcd"
  c.data.options = ml_collections.ConfigDict()  # the task's defaults: what the policy's SFT and RL draw
  # Size of the instance: the bigger of the two numbers (1–1000). Not the Euclid chain's length
  # (`solution_steps`): measured, the policy solves short chains LESS often (13.8 % vs 28.9 % pass@1 for
  # <= 3 vs >= 6 divisions), as short chains mean a large gcd, which it rarely gets right.
  c.data.difficulty_key = "max:numbers"
  c.data.easy_max = 500  # both numbers <= 500 (~25 % of problems)
  c.data.hard_min = 700  # the bigger >= 700 (~51 %)
  c.data.draw_factor = 6
  c.data.sft_size = 0  # the policy is rl.base's SFT (its train split, kept out of these splits)
  c.data.verifier_size = 8 if smoke else 64
  c.data.eval_size = 4 if smoke else 48
  c.data.max_prompt_len = 136  # gcd prompts are 128–129 tokens with BOS
  c.data.max_new_tokens = 64 if smoke else 200  # = rl.base's rollout.max_new_tokens
  c.data.seq_len = 224 if smoke else 352  # verifier texts: prompt + completion
  c.policy.sft_levels = "easy,hard"  # unused with rl.enabled (the default distribution has both)
  c.verifier.samples_per_problem = 4
  c.verifier.total_steps = 10 if smoke else 150
  c.verifier.batch_size = 8 if smoke else 16
  c.sampling.samples = 4 if smoke else 8
  c.rl.enabled = True
  c.rl.base_arg = "smoke" if smoke else ""
  c.rl.total_steps = 2 if smoke else 8
  c.rl.prompts_per_step = 2 if smoke else 8
  c.rl.group_size = 4 if smoke else 8
  c.rl.minibatch_size = 8 if smoke else 32
  c.rl.lr = 1e-4 if smoke else 2e-4
  return c
