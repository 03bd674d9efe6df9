"""GRPO from a stronger start: the tiny decoder SFT'd on reasoning-gym `gcd` (Euclid's algorithm written out).

COMMAND:
  python experiments/rl_grpo_tiny.py --config=configs/grpo_gain.py --workdir=runs/grpo_gain   # README run
  python -m w2s_jax.main --config=configs/grpo_gain.py:smoke --workdir=/tmp/grpo_gain          # < 1 min
It is `configs/grpo_tiny.py` (group-normalised advantages, PPO-clip, k3 KL 0.04 in the loss) with the task
and SFT budget changed so that the SFT'd model starts at a held-out pass@1 in the 20–50 % range (on
`chain_sum` the same model starts at ~2 %, too few correct samples for GRPO to learn from).
`gcd` solutions run to ~230 bytes, hence the longer SFT sequences and completion budget.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  c = load_config("grpo_tiny", arg)
  c.data.task = "gcd"
  c.data.max_prompt_len = 136  # gcd prompts are 128–129 tokens with BOS
  c.sft.seq_len = 320  # prompt + solution: 99 % of pairs fit
  c.sft.total_steps = 20 if smoke else 600  # smoke: a pipeline check (60 steps solved no gcd either)
  c.sft.batch_size = 8 if smoke else 16
  c.sft.workdir = ""
  c.total_steps = 3 if smoke else 50
  c.rollout.prompts_per_step = 4 if smoke else 8  # B
  c.rollout.group_size = 4 if smoke else 8  # G
  c.rollout.max_new_tokens = 64 if smoke else 200  # 99 % of worked solutions fit in 196 tokens
  c.train.minibatch_size = 8 if smoke else 32  # two updates per iteration
  c.optimizer.lr = 1e-4 if smoke else 2e-4
  c.eval.samples = 4 if smoke else 8
  c.eval.ks = [1, 2, 4] if smoke else [1, 2, 4, 8]
  c.eval_every_steps = 3 if smoke else 10
  c.data.eval_size = 8 if smoke else 128
  c.checkpoint_every_steps = 2 if smoke else 10
  return c
