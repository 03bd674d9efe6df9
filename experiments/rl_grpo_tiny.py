"""GRPO on an SFT'd tiny model: held-out pass@1, pass@k and maj@k before and during RL.

COMMAND:
  python experiments/rl_grpo_tiny.py --config=configs/grpo_gain.py --workdir=runs/grpo_gain  # gcd
  python experiments/rl_grpo_tiny.py --workdir runs/rl_grpo_tiny            # chain_sum (~20 min after SFT)
  python experiments/rl_grpo_tiny.py --workdir /tmp/rl_grpo_smoke --smoke   # the pipeline in < 1 min

With `--config`, the run is that config file exactly (`:smoke` with `--smoke`). Without it, it is
`configs/grpo_tiny.py` (which SFTs the tiny byte-level decoder on `chain_sum` worked solutions first, in
`--sft-workdir`, shared with experiments/nsr_passk.py) with the iteration count and evaluation cadence
below. It writes the usual workdir (metrics.jsonl, eval.jsonl, checkpoints; rerunning resumes) plus
`pass_at_k.png`, and prints the evaluation table (n samples per held-out problem at T = 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from w2s_jax.config_files import load_config


def eval_table(workdir: Path) -> list[dict]:
  """The evaluations of a run, in step order (`eval.jsonl`)."""
  return [json.loads(line) for line in (workdir / "eval.jsonl").read_text().splitlines()]


def plot(rows: list[dict], path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = [r["step"] for r in rows]
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for key in [k for k in rows[0] if k.startswith(("pass@", "maj@"))]:
    if key in ("pass@1", "pass@8", "maj@8"):
      ax.plot(steps, [r[key] for r in rows], marker="o", label=key)
  ax.set_xlabel("GRPO iteration")
  ax.set_ylabel("held-out score")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="", help="a config file to run as is (default: grpo_tiny + flags)")
  parser.add_argument("--workdir", default="runs/rl_grpo_tiny")
  parser.add_argument("--sft-workdir", default="runs/rl_sft_chain_sum")
  parser.add_argument("--iterations", type=int, default=150)
  parser.add_argument("--lr", type=float, default=2e-4)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()

  from w2s_jax.rl.loop import train_rl

  config = load_config(args.config or "grpo_tiny", "smoke" if args.smoke else None)
  if not args.config:
    config.sft.workdir = "" if args.smoke else args.sft_workdir
  if not args.smoke and not args.config:
    # The SFT'd tiny model solves ~2 % of held-out problems: a group of 16 (8 prompts per step) makes
    # groups with both outcomes, the only ones GRPO learns from, common enough.
    config.total_steps = args.iterations
    config.rollout.group_size = 16
    config.rollout.prompts_per_step = 8
    config.optimizer.lr = args.lr
    config.eval_every_steps = 25
    config.eval.samples = 8
    config.eval.ks = [1, 2, 4, 8]
    config.data.eval_size = 128
    config.checkpoint_every_steps = 25
  workdir = Path(args.workdir)
  summary = train_rl(config, workdir)
  rows = eval_table(workdir)
  keys = [k for k in rows[0] if k != "step"]
  print("step | " + " | ".join(keys))
  for r in rows:
    print(f"{r['step']} | " + " | ".join(f"{r[k]:.3f}" for k in keys))
  plot(rows, workdir / "pass_at_k.png", f"GRPO, {config.model.preset} model, {config.data.task} "
       f"(n={config.eval.samples})")
  print(json.dumps({"initial": rows[0], "final": rows[-1], "sft": summary["sft"].get("eval")}, default=str))


if __name__ == "__main__":
  main()
