"""Train-step throughput against this machine's matmul peak (and PyTorch, when installed), in one process.

COMMAND:
  python experiments/benchmarks/train_step.py                       # ladder-4 (~20M params), 8 x 256
  python experiments/benchmarks/train_step.py --preset=tiny --repeats=3   # quick check

FLOPs per step = 6 · params · tokens (all parameters counted once, embeddings included: the tied
embedding is also the LM head's matmul; attention score FLOPs are not counted). The matmul peak is the
median GFLOP/s of a 2048³ f32 `jnp.dot` measured in the same process right before. The last line of
output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from w2s_jax.models.presets import count_params, get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train.objectives import sft_objective
from w2s_jax.train.state import create_train_state
from w2s_jax.train.step import make_train_step


def matmul_peak(n: int = 2048, repeats: int = 7, dtype=jnp.float32) -> float:
  """Median GFLOP/s of an n³ matmul."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times) / 1e9


def random_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab, size=(batch, seq + 1)).astype(np.int32)
  return {
    "inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((batch, seq), np.int32),
    "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
    "segment_ids": np.ones((batch, seq), np.int32),
  }


def time_steps(step, state, batch, repeats: int, warmup: int = 2) -> tuple[list[float], object]:
  for _ in range(warmup):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return times, state


def bench_jax(preset: str, batch: int, seq: int, repeats: int, dtype: str, vocab: int) -> dict:
  cfg = get_preset(preset, vocab_size=vocab, dtype=dtype, max_seq_len=max(seq, 512))
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-4)
  step = jax.jit(make_train_step(sft_objective(), tx, graphdef), donate_argnums=(0,))
  state = create_train_state(params, tx, 0)
  data = {k: jnp.asarray(v) for k, v in random_batch(batch, seq, cfg.vocab_size).items()}
  t0 = time.perf_counter()
  state, m = step(state, data)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times, _ = time_steps(step, state, data, repeats)
  return {"params": count_params(cfg), "step_s": statistics.median(times), "compile_s": compile_s,
          "times": times}


def bench_torch(preset: str, batch: int, seq: int, repeats: int, vocab: int) -> dict | None:
  """The same shape as a transformers LlamaForCausalLM with torch AdamW (f32, CPU)."""
  try:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
  except ImportError:
    return None
  cfg = get_preset(preset, vocab_size=vocab)
  torch.manual_seed(0)
  model = LlamaForCausalLM(LlamaConfig(
    vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
    head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=max(seq, 512),
    rms_norm_eps=cfg.norm_eps,
  ))
  model.config._attn_implementation = "sdpa"
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  b = random_batch(batch, seq, cfg.vocab_size)
  ids = torch.as_tensor(b["inputs"], dtype=torch.long)
  labels = torch.as_tensor(b["targets"], dtype=torch.long)

  def one():
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

  times = []
  for i in range(repeats + 2):
    t = time.perf_counter()
    one()
    if i >= 2:
      times.append(time.perf_counter() - t)
  return {"params": sum(p.numel() for p in model.parameters()), "step_s": statistics.median(times),
          "times": times}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="ladder-4")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--no-torch", action="store_true")
  args = p.parse_args()

  peak = matmul_peak()
  tokens = args.batch * args.seq
  ours = bench_jax(args.preset, args.batch, args.seq, args.repeats, args.dtype, args.vocab)
  peak_after = matmul_peak()
  flops = 6 * ours["params"] * tokens
  result = {
    "preset": args.preset, "params": ours["params"], "batch": args.batch, "seq": args.seq,
    "dtype": args.dtype, "matmul_peak_gflops": peak, "matmul_peak_after_gflops": peak_after,
    "step_s": ours["step_s"], "compile_s": ours["compile_s"], "tokens_per_s": tokens / ours["step_s"],
    "gflops": flops / ours["step_s"] / 1e9, "peak_fraction": flops / ours["step_s"] / 1e9 / peak,
  }
  print(f"w2s_jax  {args.preset}: {ours['params'] / 1e6:.1f}M params, step {ours['step_s'] * 1e3:.0f} ms "
        f"(median of {args.repeats}), {result['tokens_per_s']:.0f} tokens/s, {result['gflops']:.0f} GFLOP/s "
        f"= {100 * result['peak_fraction']:.0f}% of the {peak:.0f} GFLOP/s matmul peak "
        f"({peak_after:.0f} after)")
  if not args.no_torch:
    ref = bench_torch(args.preset, args.batch, args.seq, args.repeats, args.vocab)
    if ref is not None:
      t_flops = 6 * ref["params"] * tokens / ref["step_s"] / 1e9
      result.update(torch_step_s=ref["step_s"], torch_gflops=t_flops, torch_peak_fraction=t_flops / peak,
                    speedup_vs_torch=ref["step_s"] / ours["step_s"])
      print(f"PyTorch  same shape: step {ref['step_s'] * 1e3:.0f} ms, {t_flops:.0f} GFLOP/s = "
            f"{100 * t_flops / peak:.0f}% of peak; w2s_jax is {result['speedup_vs_torch']:.2f}x")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
