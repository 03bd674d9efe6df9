"""The weak-to-strong protocol: weak labels, splits, PGR, sweeps."""

from w2s_jax.w2s.metrics import median_pgr, pgr

__all__ = ["median_pgr", "pgr"]
