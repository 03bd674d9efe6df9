"""Train-step throughput of w2s_jax vs PyTorch and Tunix's `PeftTrainer`, same weights, same run.

COMMAND:
  python experiments/benchmarks/train_step.py --tunix-python=/work/venvs/tunix/bin/python  # ~3 min quiet
  python experiments/benchmarks/train_step.py --preset=tiny --repeats=2 --no-tunix        # quick check

The model is a random transformers `LlamaForCausalLM` in the shape of a w2s_jax preset (default
ladder-4, ~20M params at vocab 8192), saved as safetensors; w2s_jax loads it with `load_hf_weights`,
PyTorch runs it as is (sdpa attention), Tunix's `tunix_peer.py` loads it into its `Llama3`. One step =
forward, backward and AdamW (lr 1e-4, f32 weights) on a batch of `--batch` x `--seq` random tokens,
next-token cross-entropy on every token. w2s_jax runs each of `--variants` (default
"einsum,blocked,dot_product"; comma-separated `attention[+bf16]`: attention "einsum" (default),
"blocked" (causal query blocks against their key prefix only) or "dot_product"; "+bf16" = bf16 compute
on f32 master weights), all from the same weights. Systems and variants are interleaved in each of
`--repeats` rounds after 2 warm-up steps each; times are medians with min-max.

FLOPs per step = 6 · params · tokens (all parameters counted once, embeddings included: the tied
embedding is also the LM head's matmul; attention score FLOPs are not counted); each system's own
count of one step is recorded too (`counted_gflop_per_step`: XLA's `cost_analysis()` of the compiled
step, torch's `FlopCounterMode`). The matmul peak is the
median GFLOP/s of a 2048³ f32 `jnp.dot` in the same process, before and after. The JSON records the
load average before and after and `"loaded": true` when it exceeded the cores (such a run's ratios
are not to be quoted). The last output line is one JSON object with every figure (per system and
variant under `systems`: step_s {median, min, max, n}, gflops, peak_fraction); `speedup_vs_torch`
and `speedup_vs_tunix` are those of the first variant (the default model), `best_variant` the fastest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from _bench import add_tunix_flag, cores, interleaved_times, load_record, spread, start_tunix  # noqa: E402

from w2s_jax.models import _hf_mapping  # noqa: E402
from w2s_jax.models.presets import get_preset  # noqa: E402
from w2s_jax.models.transformer import Transformer  # noqa: E402
from w2s_jax.train.objectives import sft_objective  # noqa: E402
from w2s_jax.train.state import create_train_state  # noqa: E402
from w2s_jax.train.step import make_train_step  # noqa: E402


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


def random_tokens(batch: int, seq: int, vocab: int, seed: int = 0) -> np.ndarray:
  """[batch, seq + 1] int32 tokens: inputs are [:, :-1], targets [:, 1:]."""
  return np.random.default_rng(seed).integers(3, vocab, size=(batch, seq + 1)).astype(np.int32)


def write_checkpoint(preset: str, vocab: int, seq: int, path: Path) -> int:
  """A random transformers Llama in the preset's shape at `path`; returns its parameter count."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  cfg = get_preset(preset, vocab_size=vocab)
  torch.manual_seed(0)
  model = LlamaForCausalLM(LlamaConfig(
    vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
    head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=max(seq + 1, 512),
    rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, pad_token_id=0,
  ))
  model.save_pretrained(path)
  return sum(p.numel() for p in model.parameters())


def jax_system(path: Path, tokens: np.ndarray, variant: str):
  """A call running one w2s_jax train step of `variant` ("einsum" | "blocked" | "dot_product", + "+bf16")."""
  from safetensors.numpy import load_file

  attention, _, dtype = variant.partition("+")
  hf = json.loads((path / "config.json").read_text())
  compute = "bfloat16" if dtype == "bf16" else "float32"
  cfg = _hf_mapping.config_from_hf(hf, attention=attention, dtype=compute)
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  _hf_mapping.load_hf_weights(model, load_file(path / "model.safetensors"))
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-4)
  step = jax.jit(make_train_step(sft_objective(), tx, graphdef), donate_argnums=(0,))
  B, S = tokens.shape[0], tokens.shape[1] - 1
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((B, S), np.int32),
           "positions": np.broadcast_to(np.arange(S, dtype=np.int32), (B, S)).copy(),
           "segment_ids": np.ones((B, S), np.int32)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  box = {"state": create_train_state(params, tx, 0)}
  compiled = step.lower(box["state"], batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost

  def call():
    box["state"], m = compiled(box["state"], batch)
    return jax.block_until_ready(m)

  call.flops = float(cost.get("flops", 0.0))  # XLA's count for the whole compiled step
  return call


def torch_system(path: Path, tokens: np.ndarray):
  """A call running one PyTorch step (transformers Llama, sdpa attention, torch AdamW, f32)."""
  import torch
  from transformers import LlamaForCausalLM

  model = LlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  ids = torch.as_tensor(tokens[:, :-1], dtype=torch.long)
  labels = torch.as_tensor(tokens[:, 1:], dtype=torch.long)

  def call():
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

  from torch.utils.flop_counter import FlopCounterMode

  with FlopCounterMode(display=False) as counter:  # one step, counted (matmuls and attention)
    call()
  call.flops = float(counter.get_total_flops())
  return call


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="ladder-4")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--variants", default="einsum,blocked,dot_product")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--no-tunix", action="store_true")
  add_tunix_flag(p)
  args = p.parse_args()

  load0 = os.getloadavg()[0]
  peak = matmul_peak()
  tokens = random_tokens(args.batch, args.seq, args.vocab)
  variants = args.variants.split(",")
  peer, tunix = (None, "unavailable (--no-tunix)") if args.no_tunix else start_tunix(args.tunix_python)
  result: dict = {"benchmark": "train_step", "preset": args.preset, "batch": args.batch, "seq": args.seq,
                  "repeats": args.repeats, "tunix": tunix}
  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp)
    params = write_checkpoint(args.preset, args.vocab, args.seq, path)
    systems = {v: jax_system(path, tokens, v) for v in variants}
    if not args.no_torch:
      systems["torch"] = torch_system(path, tokens)
    if peer is not None:
      result["tunix_first_loss"] = peer.setup("sft", ckpt=str(path), tokens=tokens.tolist())["loss"]
      systems["tunix"] = peer.run
    times = interleaved_times(systems, args.repeats)
    if peer is not None:
      peer.close()
  peak_after = matmul_peak()
  flops = 6 * params * args.batch * args.seq
  result.update(params=params, matmul_peak_gflops=peak, matmul_peak_after_gflops=peak_after, systems={})
  for name, t in times.items():
    med = statistics.median(t)
    gflops = flops / med / 1e9
    result["systems"][name] = {"step_s": spread(t), "gflops": gflops, "peak_fraction": gflops / peak}
    if getattr(systems.get(name), "flops", None):  # the system's own FLOP count of one step
      result["systems"][name]["counted_gflop_per_step"] = systems[name].flops / 1e9
    print(f"{name:>20}: step {med * 1e3:7.0f} ms (min {min(t) * 1e3:.0f}, max {max(t) * 1e3:.0f}), "
          f"{100 * gflops / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak", flush=True)
  med = {name: statistics.median(t) for name, t in times.items()}
  default = variants[0]
  result["best_variant"] = min(variants, key=med.get)
  for peer_name in ("torch", "tunix"):
    if peer_name in med:
      result[f"speedup_vs_{peer_name}"] = med[peer_name] / med[default]
      result[f"best_speedup_vs_{peer_name}"] = med[peer_name] / med[result["best_variant"]]
  result.update(load_record(load0, cores()))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
