"""bf16 compute on float32 master weights through the project's own step and optimizer.

`model.dtype="bfloat16"` casts parameters and activations to bf16 inside the forward pass only: the
gradient (taken with respect to the float32 params), AdamW's moments and the updated params stay
float32. The check that they are really kept in float32 (not rounded through bf16 on the way): with a
learning rate of 1e-5, AdamW's first step moves each weight by ~lr (the normalised update is ~sign(g));
bf16 spacing is 2^-11 ~ 4.9e-4 for |w| in [1/16, 1/8) (2^-7 near the norm scales' 1.0), so a bf16
round trip would leave most weights unchanged or move them by >= ~5e-4.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.data import pipeline, text
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import step as step_lib
from w2s_jax.train.objectives import sft_objective
from w2s_jax.train.optim import make_optimizer
from w2s_jax.train.state import create_train_state

LR = 1e-5


def _run(dtype: str, params, batch):
  cfg = dataclasses.replace(get_preset("tiny", max_seq_len=64), dtype=dtype)
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]
  tx = make_optimizer({"name": "adamw", "lr": LR, "weight_decay": 0.0, "clip_norm": 1.0}, total_steps=10)
  step = jax.jit(step_lib.make_train_step(sft_objective(), tx, graphdef))
  return step(create_train_state(params, tx, 0), batch)


def test_bf16_compute_keeps_f32_params_and_optimizer_state():
  params = nnx.state(Transformer(get_preset("tiny", max_seq_len=64), rngs=nnx.Rngs(0)), nnx.Param)
  pairs = text.python_reference_examples("train", max_chars=100)[:16]
  data = pipeline.token_data(pairs, pairs[:8], ByteTokenizer(), seq_len=48, batch_size=8, eval_batches=1,
                             seed=0)
  batch = {k: jnp.asarray(v) for k, v in data.train[0].items()}
  s32, m32 = _run("float32", params, batch)
  s16, m16 = _run("bfloat16", params, batch)
  floats = [x for x in jax.tree.leaves((s16.params, s16.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert int(m16["nonfinite_cause"]) == 0
  # bf16 rounds each matmul input to 8 mantissa bits: the loss stays within ~1 % of float32's.
  assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.01 * float(m32["loss"])
  moved = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                          for a, b in zip(jax.tree.leaves(s16.params), jax.tree.leaves(params), strict=True)])
  # Most weights moved by about lr (f32 resolution), none by a bf16 step of ~5e-4.
  assert np.mean(np.abs(moved - LR) < 0.5 * LR) > 0.9, np.percentile(moved, [5, 50, 95])
  assert moved.max() < 2 * LR
