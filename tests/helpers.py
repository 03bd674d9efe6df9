"""Shared test helpers."""

from pathlib import Path

from w2s_jax.config_files import load_config

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "load_config"]
