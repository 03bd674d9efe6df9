"""Credit assignment at equal sample budget: GRPO vs TEMPO vs TreeRL vs VinePPO on a reasoning-gym task.

COMMAND:
  python experiments/credit_assignment.py --start=grpo_gain --workdir runs/credit_assignment_gcd  # README run
  python experiments/credit_assignment.py --workdir runs/credit_assignment                  # chain_sum start
  python experiments/credit_assignment.py --workdir /tmp/ca_smoke --smoke                    # < 5 min

`--start` picks the SFT'd start: `chain_sum` (default; the tiny decoder SFT'd on chain_sum, held-out pass@1
~3 %, too few correct samples to learn from) or `grpo_gain`, where the task (`gcd`), SFT section, model,
prompt length and completion budget come from `configs/grpo_gain.py` and the SFT model is the one that run
trained (`--sft-workdir`, default runs/grpo_gain/sft; pass@1 ~22 %, which GRPO lifts to ~33 %).

Every method starts from the same SFT'd tiny decoder (`--sft-workdir`, shared with
experiments/rl_grpo_tiny.py) and runs the RL loop (`configs/{grpo,tempo,treerl,vineppo}_tiny.py`) with the
same prompts per iteration, G = 8 rows per prompt and the same loss, until it has *generated*
`--budget` tokens (`sample_budget`: every sampled token counts, VinePPO's Monte Carlo rollouts included,
a tree's shared prefixes once). Held-out pass@1 (n samples per problem) is measured every `--eval-every`
iterations and at the budget; wall-clock is the summed iteration time (`timing.jsonl`, evaluations
excluded). Seeds vary the RL draws and the prompt order (`rl_seed`), not the SFT model.

Writes WORKDIR/results.json (every run's curve), WORKDIR/credit_assignment.png (pass@1 vs sampled tokens
and vs wall-clock, mean over seeds with the bootstrap 95% CI band at the final point) and prints a
Markdown table: mean final pass@1 with its bootstrap CI over seeds, tokens, iterations and wall seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from w2s_jax.config_files import load_config

METHODS = {"grpo": "grpo_tiny", "tempo": "tempo_tiny", "treerl": "treerl_tiny", "vineppo": "vineppo_tiny"}
STARTS = {"chain_sum": "runs/rl_sft_chain_sum", "grpo_gain": "runs/grpo_gain/sft"}  # start -> SFT folder


def method_config(method: str, args: argparse.Namespace, seed: int):
  """The method's config with the shared experiment settings."""
  arg = "smoke" if args.smoke else None
  c = load_config(METHODS[method], arg)
  if args.start == "grpo_gain":  # grpo_gain's task, SFT phase, model and lengths (its SFT model is reused)
    g = load_config("grpo_gain", arg)
    c.seed, c.mesh, c.sharding = g.seed, g.mesh, g.sharding  # what the SFT phase's config also depends on
    c.data, c.sft, c.model = g.data, g.sft, g.model
    c.rollout.max_new_tokens = g.rollout.max_new_tokens
  c.rl_seed = seed
  c.sft.workdir = str(args.sft_workdir) if args.sft_workdir else ""
  c.total_steps = args.max_iterations
  c.sample_budget = args.budget
  c.checkpoint_every_steps = args.max_iterations
  c.rollout.prompts_per_step = args.prompts
  c.rollout.group_size = 8 if not args.smoke else 4
  if method == "treerl":
    t = c.rollout.tree
    t.n_roots, t.n_iters, t.top_n, t.n_forks = (4, 1, 2, 2) if not args.smoke else (2, 1, 1, 2)
  c.train.minibatch_size = args.prompts * c.rollout.group_size // 2
  c.optimizer.lr = args.lr
  c.kl.coef = 0.0  # the same loss for every method: PPO-clip, no KL
  c.reward.format_coef = args.format_coef
  c.eval.samples = args.eval_samples
  c.eval.ks = [1]
  c.eval_every_steps = args.eval_every
  if method == "vineppo" and args.eval_every_vineppo:
    c.eval_every_steps = args.eval_every_vineppo
  c.data.eval_size = args.eval_size
  if method == "vineppo" and args.mc_rollouts:
    c.advantage.mc_rollouts = args.mc_rollouts
  if method == "vineppo" and args.mc_max_steps:
    c.advantage.mc_max_steps = args.mc_max_steps
  return c


def run_curve(workdir: Path) -> list[dict]:
  """(step, sampled tokens, wall s, pass@1, answered) at every evaluation of a finished run."""
  read = lambda name: [json.loads(x) for x in (workdir / name).read_text().splitlines()]
  timing = {t["step"]: t for t in read("timing.jsonl")}
  tokens, wall, cum = 0, 0.0, {0: (0, 0.0)}
  for s in sorted(timing):
    tokens += timing[s]["sampled_tokens"]
    wall += timing[s]["iter_s"]
    cum[s] = (tokens, wall)
  return [{"step": e["step"], "tokens": cum[e["step"]][0], "wall_s": cum[e["step"]][1], "pass@1": e["pass@1"],
           "answered": e["answered"]} for e in read("eval.jsonl")]


def summarize(results: dict[str, dict[int, list[dict]]]) -> list[dict]:
  from w2s_jax.evals.metrics import bootstrap_ci

  rows = []
  for method, runs in results.items():
    finals = [curve[-1] for curve in runs.values()]
    starts = [curve[0] for curve in runs.values()]
    p, lo, hi = bootstrap_ci([f["pass@1"] for f in finals], np.mean)
    a, alo, ahi = bootstrap_ci([f["answered"] for f in finals], np.mean)
    rows.append({
      "method": method, "seeds": len(finals), "pass@1_start": float(np.mean([s["pass@1"] for s in starts])),
      "pass@1": p, "pass@1_ci": [lo, hi], "answered_start": float(np.mean([s["answered"] for s in starts])),
      "answered": a, "answered_ci": [alo, ahi], "tokens": float(np.mean([f["tokens"] for f in finals])),
      "iterations": float(np.mean([f["step"] for f in finals])),
      "wall_s": float(np.mean([f["wall_s"] for f in finals])),
    })
  return rows


def table(rows: list[dict]) -> str:
  out = ["| method | seeds | iterations | sampled tokens | train wall s | pass@1 start → final (95% CI) | "
         "answered start → final (95% CI) |", "|---|---|---|---|---|---|---|"]
  cell = lambda r, k: f"{r[k + '_start']:.3f} → {r[k]:.3f} ({r[k + '_ci'][0]:.3f}–{r[k + '_ci'][1]:.3f})"
  for r in rows:
    out.append(f"| {r['method']} | {r['seeds']} | {r['iterations']:.1f} | {r['tokens']:.0f} | "
               f"{r['wall_s']:.0f} | {cell(r, 'pass@1')} | {cell(r, 'answered')} |")
  return "\n".join(out)


def plot(results: dict[str, dict[int, list[dict]]], path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from w2s_jax.evals.metrics import bootstrap_ci

  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
  for (method, runs), color in zip(results.items(), ["C0", "C1", "C2", "C3"]):
    for ax, x in zip(axes, ("tokens", "wall_s")):
      for i, curve in enumerate(runs.values()):
        ax.plot([c[x] for c in curve], [c["pass@1"] for c in curve], color=color, alpha=0.35, marker=".",
                label=method if i == 0 else None)
      finals = [curve[-1] for curve in runs.values()]
      mean, lo, hi = bootstrap_ci([f["pass@1"] for f in finals], np.mean)  # the table's CI
      ax.errorbar(np.mean([f[x] for f in finals]), mean, yerr=[[mean - lo], [hi - mean]], color=color,
                  marker="o", capsize=3)
  axes[0].set_xlabel("sampled tokens")
  axes[1].set_xlabel("training wall-clock (s)")
  axes[0].set_ylabel("held-out pass@1")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", type=Path, default=Path("runs/credit_assignment"))
  parser.add_argument("--start", choices=STARTS, default="chain_sum", help="the SFT'd start (see above)")
  parser.add_argument("--sft-workdir", type=Path, default=None,
                      help="shared SFT folder; default runs/rl_sft_chain_sum or runs/grpo_gain/sft")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--budget", type=int, default=40_000, help="sampled tokens per run")
  parser.add_argument("--max-iterations", type=int, default=60)
  parser.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
  parser.add_argument("--lr", type=float, default=2e-4)
  parser.add_argument("--format-coef", type=float, default=None,
                      help="reward weight of a well-formatted answer; default 0.5 (chain_sum), 0 (gcd)")
  parser.add_argument("--mc-rollouts", type=int, default=0, help="VinePPO K; 0 = configs/vineppo_tiny.py's")
  parser.add_argument("--mc-max-steps", type=int, default=0, help="VinePPO C; 0 = configs/vineppo_tiny.py's")
  parser.add_argument("--eval-every", type=int, default=4)
  parser.add_argument("--eval-every-vineppo", type=int, default=0,
                      help="VinePPO's evaluation period (its iterations cost more tokens); 0 = --eval-every")
  parser.add_argument("--eval-size", type=int, default=64)
  parser.add_argument("--eval-samples", type=int, default=4)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  if args.sft_workdir is None:
    args.sft_workdir = Path(STARTS[args.start])
  if args.format_coef is None:
    args.format_coef = 0.5 if args.start == "chain_sum" else 0.0  # grpo_gain's reward: correctness only
  if args.smoke:
    args.sft_workdir = args.workdir / "sft"
    args.budget, args.max_iterations, args.prompts = min(args.budget, 1500), 4, 4
    args.eval_every, args.eval_size, args.seeds = 2, 8, min(args.seeds, 2)

  import jax

  from w2s_jax.rl.loop import train_rl
  from w2s_jax.train.pretrain import cache_root

  # As the entry point: compiled programs are kept across the sweep's runs.
  jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  args.workdir.mkdir(parents=True, exist_ok=True)
  results: dict[str, dict[int, list[dict]]] = {}
  for seed in range(args.seeds):  # seed-major: a stopped sweep has every method for its first seeds
    for method in args.methods.split(","):
      run_dir = args.workdir / f"{method}_seed{seed}"
      train_rl(method_config(method, args, seed), run_dir)
      results.setdefault(method, {})[seed] = run_curve(run_dir)
      print(method, seed, json.dumps(results[method][seed][-1]), flush=True)
      rows = summarize(results)  # after every run: a stopped sweep keeps what it measured
      (args.workdir / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "summary": rows, "curves": results}, indent=1))
      plot(results, args.workdir / "credit_assignment.png",
           f"{method_config('grpo', args, 0).data.task}, tiny model, {args.budget} sampled tokens per run, "
           f"{seed + 1} seeds")
  print(table(rows))


if __name__ == "__main__":
  main()
