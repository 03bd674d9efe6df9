"""DPO of the tiny decoder on reasoning-gym preference pairs (correct vs incorrect solutions).

COMMAND:
  python -m w2s_jax.main --config=configs/dpo_tiny.py:smoke --workdir=/tmp/dpo_tiny
  python -m w2s_jax.main --config=configs/dpo_tiny.py --workdir=runs/dpo_tiny
  cDPO: --config.objective.label_smoothing=0.1
  (other losses: configs/{ipo,simpo,orpo,kto,reward_model}_tiny.py)

DATA (which pairs each arg uses):
  smoke: NOT sampled. `chain_sum` worked solutions (chosen) vs the same steps ending in a wrong final
    answer (rejected), both checked with reasoning-gym's scorer, from a randomly initialised tiny model
    that is also the reference. Seconds on CPU.
  full (no arg): SAMPLED. The tiny model is first fine-tuned on `chain_sum` worked solutions (cached),
    then 8 solutions per prompt are sampled from it at temperature 1 and scored by the task's scorer;
    pairs are correct (chosen) vs incorrect (rejected) completions of the same prompt, and the SFT
    model is the policy's start and the reference.
EXPECTED: `eval_reward_accuracy` in metrics.jsonl (share of held-out pairs with a positive implicit
  reward margin) rises from its first eval; the smoke run ends well above it.
"""

import ml_collections

from w2s_jax.train.preference_config import preference_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return preference_config(arg, objective={"name": "dpo", "beta": 0.1, "label_smoothing": 0.0})
