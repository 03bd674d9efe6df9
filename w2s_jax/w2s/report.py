"""A sweep's results as Markdown tables: the ladder, and ceilings, transfer accuracy and PGR with 95 % CIs."""

from __future__ import annotations

import math
from typing import Any


def _ci(d: dict[str, Any], pct: bool = True) -> str:
  if d["median"] is None:
    return "n/a"
  f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.2f}")
  if d["n"] > 1:
    return f"{f(d['median'])} [{f(d['low'])}, {f(d['high'])}]"
  return f(d["median"])


def _per_seed(results: dict[str, Any], weak: str, strong: str, loss: str) -> str:
  values = [t["pgr"] for s in results.get("per_seed", []) for t in s["transfer"]
            if (t["weak"], t["strong"], t["loss"]) == (weak, strong, loss)]
  return ", ".join("n/a" if math.isnan(v) else f"{v:.2f}" for v in values)


def results_table(results: dict[str, Any]) -> str:
  """Markdown: one row per (weak, strong, loss) with both ceilings, transfer accuracy, PGR and PGR per
  seed (in seed order)."""
  s = results["summary"]
  lines = [
    "| weak | strong | loss | weak ceiling % | strong ceiling % | transfer % | PGR | PGR per seed |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for t in s["transfer"]:
    lines.append(
      f"| {t['weak']} | {t['strong']} | {t['loss']} | {_ci(s['ceilings'][t['weak']])} | "
      f"{_ci(s['ceilings'][t['strong']])} | {_ci(t['accuracy'])} | {_ci(t['pgr'], pct=False)} | "
      f"{_per_seed(results, t['weak'], t['strong'], t['loss'])} |"
    )
  return "\n".join(lines)


def ladder_table(results: dict[str, Any]) -> str:
  """Markdown: the ladder's sizes, blocks and held-out next-token loss (— for checkpoints loaded here)."""
  lines = ["| model | params | blocks | held-out loss (nats/token) |", "|---|---|---|---|"]
  for name, r in results["ladder"].items():
    loss = "—" if math.isnan(r["eval_loss"]) else f"{r['eval_loss']:.3f}"
    lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {r.get('layers', '')} | {loss} |")
  return "\n".join(lines)
