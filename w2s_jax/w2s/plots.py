"""PNG plots of a weak-to-strong sweep, in the style of Burns et al. (2023), Fig. 3."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_sweep(summary: dict[str, Any], sizes: Sequence[str], params: dict[str, int], out_dir: Path
               ) -> list[Path]:
  """One figure per loss: test accuracy vs strong-model size, a line per weak supervisor, the
  ground-truth ceilings in black; and PGR vs strong size. Returns the written paths."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out_dir.mkdir(parents=True, exist_ok=True)
  losses = sorted({t["loss"] for t in summary["transfer"]})
  x = {s: params[s] for s in sizes}
  paths = []
  for loss in losses:
    fig, (ax_acc, ax_pgr) = plt.subplots(1, 2, figsize=(10, 4))
    ceil = [summary["ceilings"][s]["median"] for s in sizes]
    ax_acc.plot([x[s] for s in sizes], ceil, "k-o", label="ground truth (ceiling)")
    colors = plt.cm.viridis([i / max(len(sizes) - 1, 1) for i in range(len(sizes))])
    for i, weak in enumerate(sizes[:-1]):
      rows = [t for t in summary["transfer"] if t["weak"] == weak and t["loss"] == loss]
      if not rows:
        continue
      xs = [x[weak]] + [x[t["strong"]] for t in rows]
      acc = [summary["ceilings"][weak]["median"]] + [t["accuracy"]["median"] for t in rows]
      ax_acc.plot(xs, acc, "-o", color=colors[i], label=f"weak {weak}")
      pg = [(x[t["strong"]], t["pgr"]["median"], t["pgr"]["low"], t["pgr"]["high"]) for t in rows
            if t["pgr"]["median"] is not None]
      if pg:
        px, pm, lo, hi = zip(*pg, strict=True)
        ax_pgr.errorbar(px, pm, yerr=[[m - low for m, low in zip(pm, lo, strict=True)],
                                      [high - m for m, high in zip(pm, hi, strict=True)]],
                        fmt="-o", color=colors[i], capsize=3, label=f"weak {weak}")
    for ax in (ax_acc, ax_pgr):
      ax.set_xscale("log")
      ax.set_xlabel("strong student parameters")
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax_acc.set_ylabel("test accuracy")
    ax_pgr.set_ylabel("performance gap recovered (median, 95% CI)")
    ax_pgr.axhline(0, color="gray", lw=0.5)
    ax_pgr.axhline(1, color="gray", lw=0.5, ls="--")
    fig.suptitle(f"weak-to-strong, loss = {loss}")
    fig.tight_layout()
    path = out_dir / f"w2s_{loss}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
