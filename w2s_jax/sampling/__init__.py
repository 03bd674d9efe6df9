"""Sampling: a jitted KV-cache sampler (`Sampler`, `generate`), sequence scoring (`score`) and a
forking tree sampler with shared prefixes (`sample_tree_steps`, `sample_tree_entropy`)."""

from w2s_jax.sampling.sampler import (
  PAUSED,
  RUNNING,
  STOPPED,
  TRUNCATED,
  DecodeState,
  SampleOutput,
  Sampler,
  SamplingConfig,
  generate,
  left_pad,
)
from w2s_jax.sampling.score import score, score_fn

__all__ = [
  "PAUSED",
  "RUNNING",
  "STOPPED",
  "TRUNCATED",
  "DecodeState",
  "SampleOutput",
  "Sampler",
  "SamplingConfig",
  "generate",
  "left_pad",
  "score",
  "score_fn",
]
