"""A sweep's results as a Markdown table: ceilings, transfer accuracy and PGR with 95 % CIs."""

from __future__ import annotations

from typing import Any


def _ci(d: dict[str, Any], pct: bool = True) -> str:
  if d["median"] is None:
    return "n/a"
  f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.2f}")
  if d["n"] > 1:
    return f"{f(d['median'])} [{f(d['low'])}, {f(d['high'])}]"
  return f(d["median"])


def results_table(results: dict[str, Any]) -> str:
  """Markdown: one row per (weak, strong, loss) with both ceilings, transfer accuracy and PGR."""
  s = results["summary"]
  lines = [
    "| weak | strong | loss | weak ceiling % | strong ceiling % | transfer % | PGR |",
    "|---|---|---|---|---|---|---|",
  ]
  for t in s["transfer"]:
    lines.append(
      f"| {t['weak']} | {t['strong']} | {t['loss']} | {_ci(s['ceilings'][t['weak']])} | "
      f"{_ci(s['ceilings'][t['strong']])} | {_ci(t['accuracy'])} | {_ci(t['pgr'], pct=False)} |"
    )
  return "\n".join(lines)


def ladder_table(results: dict[str, Any]) -> str:
  """Markdown: the ladder's sizes and held-out next-token loss."""
  lines = ["| model | params | held-out loss (nats/token) |", "|---|---|---|"]
  for name, r in results["ladder"].items():
    lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {r['eval_loss']:.3f} |")
  return "\n".join(lines)
