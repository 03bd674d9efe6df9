"""PNG plots of a weak-to-strong sweep, in the style of Burns et al. (2023), Fig. 3.

The x axis is the strong student's rung, weakest first, one tick per rung labelled with its name and size
(parameters, and blocks for checkpoint rungs): rungs of different kinds (a byte-level ladder, truncated
SmolLM2 rungs) share no meaningful numeric scale, and a truncated rung's parameter count is mostly its
shared embedding. A panel is drawn only when it has something to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _tick(name: str, params: Mapping[str, int], depths: Mapping[str, int] | None) -> str:
  size = f"{params[name] / 1e6:.2f}M" if name in params else ""
  blocks = f", {depths[name]} blocks" if depths and name in depths and "@" in name else ""
  return f"{name}\n{size}{blocks}"


def _pgr_lines(summary: dict[str, Any], sizes: Sequence[str], loss: str) -> list[tuple[str, list[tuple]]]:
  """Per weak rung: [(strong index, median, low, high)] of the pairs with a defined PGR."""
  index = {s: i for i, s in enumerate(sizes)}
  out = []
  for weak in sizes[:-1]:
    pts = [(index[t["strong"]], t["pgr"]["median"], t["pgr"]["low"], t["pgr"]["high"])
           for t in summary["transfer"]
           if t["weak"] == weak and t["loss"] == loss and t["pgr"]["median"] is not None]
    if pts:
      out.append((weak, pts))
  return out


def plot_sweep(summary: dict[str, Any], sizes: Sequence[str], params: Mapping[str, int], out_dir: Path, *,
               depths: Mapping[str, int] | None = None) -> list[Path]:
  """Per loss, `w2s_<loss>.png`: test accuracy against the strong rung (ground-truth ceilings in black, a
  line per weak supervisor starting at its own ceiling) and, when any pair has a defined PGR, PGR
  against the strong rung (a line per weak rung, medians with 95 % bootstrap CIs: Burns et al.'s Fig. 3).

  Args:
    summary: `protocol.summarize` output.
    sizes: rung labels, weakest first.
    params: parameter count per rung (tick labels).
    out_dir: where the PNGs go (created).
    depths: blocks per rung (tick labels of truncated rungs `ckpt@k`).

  Returns:
    The written paths.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out_dir.mkdir(parents=True, exist_ok=True)
  losses = sorted({t["loss"] for t in summary["transfer"]})
  index = {s: i for i, s in enumerate(sizes)}
  colors = plt.cm.viridis([i / max(len(sizes) - 1, 1) for i in range(len(sizes))])
  paths = []
  for loss in losses:
    lines = _pgr_lines(summary, sizes, loss)
    fig, axes = plt.subplots(1, 2 if lines else 1, figsize=(11 if lines else 6, 4.2), squeeze=False)
    ax_acc = axes[0, 0]
    ceil = [(i, summary["ceilings"][s]["median"]) for i, s in enumerate(sizes)
            if summary["ceilings"].get(s, {}).get("median") is not None]
    ax_acc.plot(*zip(*ceil, strict=True), "k-o", label="ground truth (ceiling)")
    for i, weak in enumerate(sizes[:-1]):
      rows = [t for t in summary["transfer"] if t["weak"] == weak and t["loss"] == loss
              and t["accuracy"]["median"] is not None]
      if rows:
        xs = [i] + [index[t["strong"]] for t in rows]
        acc = [summary["ceilings"][weak]["median"]] + [t["accuracy"]["median"] for t in rows]
        ax_acc.plot(xs, acc, "-o", color=colors[i], label=f"weak {weak}")
    ax_acc.set_ylabel("test accuracy")
    if lines:
      ax_pgr = axes[0, 1]
      for weak, pts in lines:
        x, m, lo, hi = zip(*pts, strict=True)
        ax_pgr.errorbar(x, m, yerr=[[a - b for a, b in zip(m, lo, strict=True)],
                                    [b - a for a, b in zip(m, hi, strict=True)]],
                        fmt="-o", color=colors[index[weak]], capsize=3, label=f"weak {weak}")
      ax_pgr.axhline(0, color="gray", lw=0.5)
      ax_pgr.axhline(1, color="gray", lw=0.5, ls="--")
      ax_pgr.set_ylabel("performance gap recovered\n(median, 95% CI)")
    for ax in axes[0]:
      ax.set_xticks(range(len(sizes)), [_tick(s, params, depths) for s in sizes], fontsize=7)
      ax.set_xlim(-0.3, len(sizes) - 0.7)
      ax.set_xlabel("strong student (rung)")
      ax.legend(fontsize=7)
    fig.suptitle(f"weak-to-strong, loss = {loss}")
    fig.tight_layout()
    path = out_dir / f"w2s_{loss}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
