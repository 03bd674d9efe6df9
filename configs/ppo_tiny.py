"""PPO with a critic: GAE advantages from a value model (ActorCritic), clipped value loss, k1 KL in the
reward, two epochs of minibatch updates per rollout.

COMMAND:
  python -m w2s_jax.main --config=configs/ppo_tiny.py:smoke --workdir=/tmp/ppo_tiny
Everything else (model, task, SFT phase, rollout sizes, evaluation) is `configs/rl_base.py`; override any
key with --config.x=y.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config("rl_base", arg)
  c.advantage.name = "gae"
  c.advantage.gamma = 1.0
  c.advantage.lam = 0.95
  c.loss.name = "ppo"
  c.loss.reduction = "token-mean"
  c.loss.value_coef = 0.5
  c.kl.coef = 0.05
  c.kl.kind = "k1"
  c.kl.where = "reward"
  c.train.epochs = 2
  c.rollout.old_logprobs = "recompute"
  return c
