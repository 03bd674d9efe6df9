"""VinePPO (arXiv 2410.01679): step values from K Monte Carlo rollouts per step boundary, no critic.

COMMAND:
  python -m w2s_jax.main --config=configs/vineppo_tiny.py:smoke --workdir=/tmp/vineppo_tiny
Steps of a response end at the tokens of `advantage.step_boundary` (a newline: one worked-solution line
per step); from the state before each of the first `mc_max_steps` steps, `mc_rollouts` completions are
drawn (forking the response's KV cache) and scored, V̂(s_i) is their mean reward, and every token of step
i gets A_i = r_i + V̂(s_{i+1}) − V̂(s_i) (`w2s_jax.advantages.mc_step_advantages`). Only the responses are
trained on. Everything else is `configs/rl_base.py`.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  smoke = arg == "smoke"
  c.advantage.name = "vineppo"
  c.advantage.mc_rollouts = 2 if smoke else 4
  c.advantage.mc_max_steps = 3 if smoke else 6
  c.advantage.step_boundary = "\n"
  c.loss.name = "ppo"
  c.loss.reduction = "seq-mean-token-mean"
  c.kl.coef = 1e-4  # VinePPO's KL loss coefficient
  c.kl.kind = "k3"
  c.kl.where = "loss"
  return c
