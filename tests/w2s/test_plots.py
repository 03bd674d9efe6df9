"""Sweep plots: Burns et al.'s Fig. 3 (PGR against the strong rung, a line per weak rung), no empty panel."""

import struct

from w2s_jax.w2s.plots import plot_sweep


def _ci(m):
  return {"median": m, "low": None if m is None else m - 0.1, "high": None if m is None else m + 0.1,
          "n": 0 if m is None else 3}


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  return struct.unpack(">II", head[16:24])


def _summary(pgr):
  sizes = ["m@2", "m@8", "m@16"]
  ceilings = {s: _ci(a) for s, a in zip(sizes, [0.6, 0.7, 0.75], strict=True)}
  pairs = [("m@2", "m@8"), ("m@2", "m@16"), ("m@8", "m@16")]
  transfer = [{"weak": w, "strong": s, "loss": "xent", "accuracy": _ci(0.65), "pgr": _ci(pgr)}
              for w, s in pairs]
  return sizes, {"ceilings": ceilings, "transfer": transfer}


def test_pgr_panel_is_drawn_only_when_some_pgr_is_defined(tmp_path):
  sizes, summary = _summary(0.3)
  params = {s: 1_000_000 * (i + 1) for i, s in enumerate(sizes)}
  depths = {"m@2": 2, "m@8": 8, "m@16": 16}
  (both,) = plot_sweep(summary, sizes, params, tmp_path / "a", depths=depths)
  sizes, undefined = _summary(None)  # every gap <= 0: PGR undefined everywhere
  (acc_only,) = plot_sweep(undefined, sizes, params, tmp_path / "b", depths=depths)
  assert both.name == acc_only.name == "w2s_xent.png"
  width_both, _ = _png_size(both)
  width_one, _ = _png_size(acc_only)
  assert width_both == 11 * 110 and width_one == 6 * 110  # two panels, or the accuracy panel alone
