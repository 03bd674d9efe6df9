"""The quickstart's sweep with a weak rung further from chance: SmolLM2-135M cut after block 4 → block 16.

COMMAND:
  python -m w2s_jax.main --config=configs/w2s_smollm2_gap.py --workdir=runs/smollm2_gap
The quickstart's weak rung (`@2`) is at chance in `top` mode (51 %), so its labels carry no signal; block 4's
linear-probe ceiling is ~67 % against block 16's ~78 % (README, "The weak-to-strong sweep"). All else is
the quickstart's (task, data, `top` mode with 1 block, 100 steps, 6 seeds, xent); the feature cache of a
quickstart run is reused for block 16, only a 3-block pass is new.
OUTPUT: as configs/w2s_sweep.py: results.json, plots/, metrics.jsonl, runs/*/.
"""

import ml_collections

from w2s_jax.config_files import load_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  c = load_config("quickstart", "smoke" if arg == "smoke" else None)
  if arg != "smoke":
    c.ladder.sizes = ("gguf:smollm2-135m@4", "gguf:smollm2-135m@16")
  return c
