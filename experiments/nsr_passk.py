"""Positive-only (PSR), negative-only (NSR) and full REINFORCE on pass@k, k = 1…16 (Zhu et al. 2025).

COMMAND:
  python experiments/nsr_passk.py --workdir runs/nsr_passk            # the README run (CPU)
  python experiments/nsr_passk.py --workdir /tmp/nsr_smoke --smoke     # the pipeline in ~1 min

Three RL runs from the same SFT'd tiny model (`--sft-workdir`, shared with experiments/rl_grpo_tiny.py) on
`chain_sum`, differing only in the advantage (`configs/rl_base.py` otherwise, no KL, on-policy PPO-clip
loss with token-mean reduction, as the paper's verl code):
  psr:  A = r            (reinforce correct samples only)
  nsr:  A = r − 1        (push down incorrect samples only)
  full: A = +1 / −1      (W-REINFORCE with λ = 1: both)
Held-out pass@k for k = 1…16 from n = 16 samples per problem (unbiased estimator) before RL and after each
run; prints the table and writes `pass_at_k.png` and `results.json` into the workdir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from w2s_jax.config_files import load_config

MODES = {
  "psr": dict(name="psr"),
  "nsr": dict(name="nsr"),
  "full": dict(name="w_reinforce", positive_weight=1.0, negative_weight=1.0),
}
KS = list(range(1, 17))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/nsr_passk")
  parser.add_argument("--sft-workdir", default="runs/rl_sft_chain_sum")
  parser.add_argument("--iterations", type=int, default=30)
  parser.add_argument("--eval-size", type=int, default=64)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()

  from w2s_jax.rl.loop import train_rl

  root = Path(args.workdir)
  results = {}
  for mode, adv in MODES.items():
    c = load_config("rl_base", "smoke" if args.smoke else None)
    c.advantage.update(adv)
    c.loss.name = "ppo"
    c.loss.reduction = "token-mean"
    c.kl.coef = 0.0
    c.eval.samples = 16
    c.eval.ks = KS
    c.eval_every_steps = 0  # only before and after (the final iteration always evaluates)
    if args.smoke:
      c.sft.workdir = str(root / "sft")
      c.rollout.group_size = 4
    else:
      c.sft.workdir = args.sft_workdir
      c.total_steps = args.iterations
      c.data.eval_size = args.eval_size
      c.checkpoint_every_steps = 10
    summary = train_rl(c, root / mode)
    evals = [json.loads(x) for x in (root / mode / "eval.jsonl").read_text().splitlines()]
    results[mode] = {"before": evals[0], "after": evals[-1], "iterations": int(c.total_steps),
                     "train_accuracy_last": summary.get("last", {}).get("train_accuracy")}
  (root / "results.json").write_text(json.dumps(results, indent=2))

  base = results["psr"]["before"]
  print("k  | SFT   | " + " | ".join(f"{m:5s}" for m in MODES))
  for k in KS:
    print(f"{k:2d} | {base[f'pass@{k}']:.3f} | " + " | ".join(f"{results[m]['after'][f'pass@{k}']:.3f}"
                                                        for m in MODES))
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.plot(KS, [base[f"pass@{k}"] for k in KS], "k--", label="SFT (before RL)")
  for m in MODES:
    ax.plot(KS, [results[m]["after"][f"pass@{k}"] for k in KS], marker=".", label=m)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k")
  ax.set_ylabel("held-out pass@k")
  ax.set_title("PSR vs NSR vs full REINFORCE (chain_sum)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(root / "pass_at_k.png", dpi=120)


if __name__ == "__main__":
  main()
