"""The tests compile with their own XLA:CPU flags (tests/conftest.py's `TEST_XLA_FLAGS`: no LLVM
optimisation, the elemental IR emitter for fusions, one codegen thread); users run XLA's defaults. The flags
change how a program is compiled, not what it computes: the same train steps and forward passes, run here
under the tests' flags and in a child process under XLA's defaults (`XLA_FLAGS` emptied, no compilation
cache), agree to float32 rounding.

What is compared: the losses and gradient norms of three AdamW train steps of the tiny preset (SwiGLU),
and the logits of the initial model and of a GeGLU (`gelu_tanh`) variant, so the exponentials, tanh,
rsqrt and log-softmax of both code paths are exercised. The parameters themselves are not compared after
an update: where a gradient element is near zero, a last-bit difference can flip the sign of AdamW's
normalised step (a change of ~2 lr in that one weight) without changing anything else measurably.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

B, S = 4, 32


def compute(out: Path) -> None:
  """Runs the compared programs in this process and saves their outputs to `out` (.npz)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train.objectives import sft_objective
  from w2s_jax.train.optim import make_optimizer
  from w2s_jax.train.state import create_train_state
  from w2s_jax.train.step import make_train_step

  cfg = get_preset("tiny", max_seq_len=64)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, size=(B, S + 1)).astype(np.int32)
  positions = np.broadcast_to(np.arange(S, dtype=np.int32), (B, S))
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": positions,
           "segment_ids": np.ones((B, S), np.int32), "loss_mask": np.ones((B, S), np.float32)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  results = {}
  for name, c in (("swiglu", cfg), ("geglu", dataclasses.replace(cfg, mlp_activation="gelu_tanh"))):
    graphdef, params = nnx.split(Transformer(c, rngs=nnx.Rngs(0)))
    forward = jax.jit(lambda p, g=graphdef: nnx.merge(g, p)(
      batch["inputs"], positions_BL=batch["positions"], segment_ids_BL=batch["segment_ids"]))
    results[f"{name}_logits"] = np.asarray(forward(params))
    if name == "swiglu":
      tx = make_optimizer({"name": "adamw", "lr": 1e-3, "schedule": "cosine", "warmup_steps": 0,
                           "weight_decay": 0.01, "clip_norm": 1.0}, total_steps=3)
      step = jax.jit(make_train_step(sft_objective(), tx, graphdef))
      state = create_train_state(params, tx, 0)
      losses, norms = [], []
      for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
      results["losses"], results["grad_norms"] = np.array(losses), np.array(norms)
  np.savez(out, **results)


def test_the_tests_xla_flags_compute_what_xlas_defaults_compute(tmp_path: Path):
  flags = os.environ.get("XLA_FLAGS", "")
  assert "--xla_cpu_use_fusion_emitters=false" in flags, f"conftest's TEST_XLA_FLAGS not in {flags!r}"
  compute(tmp_path / "tests_flags.npz")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  env["JAX_PLATFORMS"] = "cpu"
  root = Path(__file__).resolve().parents[2]
  proc = subprocess.run([sys.executable, __file__, str(tmp_path / "defaults.npz")], env=env, cwd=root,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours, defaults = np.load(tmp_path / "tests_flags.npz"), np.load(tmp_path / "defaults.npz")
  assert sorted(ours.files) == sorted(defaults.files) == ["geglu_logits", "grad_norms", "losses",
                                                          "swiglu_logits"]
  for name in ("swiglu_logits", "geglu_logits"):
    scale = np.abs(defaults[name]).max()
    assert scale > 0.1  # a real signal, not all zeros
    np.testing.assert_allclose(ours[name], defaults[name], rtol=0, atol=1e-5 * scale, err_msg=name)
  # The first loss and gradient norm come from the same initial weights; later ones after updates.
  np.testing.assert_allclose(ours["losses"], defaults["losses"], rtol=1e-5)
  np.testing.assert_allclose(ours["grad_norms"], defaults["grad_norms"], rtol=1e-4)
  assert defaults["losses"][2] < defaults["losses"][0]  # the steps trained: the comparison is of updates


if __name__ == "__main__":  # the child: XLA's default flags
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
  compute(Path(sys.argv[1]))
