"""Shared fixtures of the sampling tests: tiny random models (every parameter perturbed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import GEMMA_TINY
from w2s_jax.models import Transformer, get_preset


def random_model(cfg, seed=0):
  """A `Transformer(cfg)` with NumPy-random params (norm scales and biases random too).

  No JAX initialisation runs: it would compile an init graph (seconds on a busy machine).
  """
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def draw(path, x):
    noise = rng.normal(size=x.shape).astype(np.float32)
    if len(x.shape) == 1:  # norm scales (stored as w, used as offset + w)
      return jnp.asarray(1.0 - cfg.norm_offset + 0.3 * noise)
    fan_in = x.shape[0] * (x.shape[1] if "o_NHD" in jax.tree_util.keystr(path) else 1)
    return jnp.asarray(noise * fan_in**-0.5)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


@pytest.fixture(scope="session")
def tiny_model():
  return random_model(get_preset("tiny"))


@pytest.fixture(scope="session")
def gemma_model():
  return random_model(GEMMA_TINY, seed=3)
