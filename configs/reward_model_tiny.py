"""A Bradley–Terry reward model: the tiny decoder with a zero-initialised scalar head
(`SequenceClassifier(cfg, 1)`; `--config.model.head=value` for `ValueModel`) trained on chosen/rejected pairs.

COMMAND:
  python -m w2s_jax.main --config=configs/reward_model_tiny.py:smoke --workdir=/tmp/reward_model_tiny
  python -m w2s_jax.main --config=configs/reward_model_tiny.py --workdir=runs/reward_model_tiny

DATA: smoke: NOT sampled: `chain_sum` worked solutions (chosen) vs the same solution with a wrong final
  answer or cut off before its answer (rejected), checked with reasoning-gym's scorer, from a randomly
  initialised tiny model. Full (no arg): SAMPLED: the tiny model fine-tuned on `chain_sum` worked solutions
  (cached) samples 8 solutions per prompt, the task's scorer marks them, and pairs are correct (chosen) vs
  incorrect (rejected) solutions of one prompt; the backbone starts from the SFT model.
EXPECTED: `eval_reward_accuracy` (share of held-out pairs with a positive implicit reward margin) ends
  above `eval_reward_accuracy_start` (its value before training), both in metrics.jsonl.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(
    arg, objective={"name": "reward_model", "center_rewards_coefficient": 0.01}, lr=1e-3, full_lr=1e-4,
    model={"head": "classifier"},
  )
