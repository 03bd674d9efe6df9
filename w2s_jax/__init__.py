"""w2s_jax: weak-to-strong post-training of language models in JAX/Flax NNX."""

__version__ = "0.1.0"
