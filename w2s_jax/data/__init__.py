"""Data: tokenizers, reasoning tasks, W2S sets, TFDS builders (registered on import), pipelines.

Importing this package registers the TFDS builders `w2s_reasoning`, `w2s_verify` and `w2s_pretrain`
(see `w2s_jax.data.builders`); they build to array_record and read back with `tfds.data_source`.
"""

from w2s_jax.data import builders as builders
from w2s_jax.data.builders import BUILDERS as BUILDERS
from w2s_jax.data.builders import build as build
