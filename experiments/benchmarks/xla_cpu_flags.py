"""XLA:CPU options A/B: the train step's matmuls and one train step, each option in fresh processes.

COMMAND:
  python experiments/benchmarks/xla_cpu_flags.py --work=matmul --rounds=3           # ~2 min quiet
  python experiments/benchmarks/xla_cpu_flags.py --work=step --rounds=3 --options=default,xnn_dot
  python experiments/benchmarks/xla_cpu_flags.py --list                             # the options tried

Every option (a named `XLA_FLAGS` string, or a jax config such as the default matmul precision) runs in
its own fresh Python process, so XLA reads its flags at start-up; the options are interleaved in each of
`--rounds` rounds (order rotated each round) so a burst of load from other processes hits all of them.
`--work=matmul` times one jitted f32 `x @ w` per shape of the ladder-4 train step at 8 x 256 tokens (the
forward shapes and the two backward ones: dx = dy @ w.T, dw = x.T @ dy), reporting GFLOP/s per wall
second and per CPU second (process time over all threads), and the largest relative error against a
float64 numpy product. `--work=step` builds the preset (random init, seed 0), runs 1 + `--steps` AdamW
train steps on a fixed random batch and reports the median step wall / CPU seconds, the compile wall
and every step's loss; the losses of each option are compared with the default's. An option
"NAME@ATTENTION" runs option NAME with `model.attention` = ATTENTION (e.g. "default@blocked").

The last output line is one JSON object: per option, the median over rounds of each figure and its
ratio to the default's (`>1` = faster), the worst loss difference, and the load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="  # empty list: no YNNPACK fusions (the default has them)
# name -> (XLA_FLAGS, extra environment). Flag names and defaults from jax 0.10.2's XLA (an illegal value,
# e.g. XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=bogus, makes XLA print every flag with its default).
OPTIONS: dict[str, tuple[str, dict[str, str]]] = {
  "default": ("", {}),  # dots, elementwise ops and reductions in YNNPACK fusions
  "no_ynn": (NO_YNN, {}),  # dots through XLA's Eigen thunks, the rest through XLA's fusion emitters
  "no_ynn_xnn_dot": (f"{NO_YNN} --xla_cpu_experimental_xnn_fusion_type=dot", {}),
  "no_ynn_xnn_graph": (
    f"{NO_YNN} --xla_cpu_experimental_xnn_fusion_type=dot "
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_BYPASS_COST_MODEL", {}),
  "no_ynn_onednn": (f"{NO_YNN} --xla_cpu_use_onednn=true", {}),
  "no_ynn_onednn_dot": (f"{NO_YNN} --xla_cpu_experimental_onednn_fusion_type=dot", {}),
  "no_ynn_onednn_cc": (f"{NO_YNN} --xla_cpu_experimental_onednn_custom_call=true", {}),
  "no_ynn_one_thread": (f"{NO_YNN} --xla_cpu_multi_thread_eigen=false", {}),
  "fast_math": ("--xla_cpu_enable_fast_math=true", {}),
  "one_thread": ("--xla_cpu_multi_thread_eigen=false", {}),
  "fast_runtime": ("--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME", {}),
  "no_fusion_emitters": ("--xla_cpu_use_fusion_emitters=false", {}),
  "vector_512": ("--xla_cpu_prefer_vector_width=512", {}),
  "precision_bf16": ("", {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}),
}


def step_matmul_shapes(preset: str, vocab: int, tokens: int) -> dict[str, tuple[int, int, int]]:
  """(M, K, N) of the step's dense matmuls: forward x @ w, backward dy @ w.T and x.T @ dy."""
  from w2s_jax.models.presets import get_preset

  cfg = get_preset(preset, vocab_size=vocab)
  d, f, hd = cfg.d_model, cfg.d_ff, cfg.head_dim
  dense = {"q": (d, cfg.n_heads * hd), "kv": (d, cfg.n_kv_heads * hd), "mlp_up": (d, f), "mlp_down": (f, d),
           "lm_head": (d, vocab)}
  shapes = {}
  for name, (k, n) in dense.items():
    shapes[f"{name}_fwd"] = (tokens, k, n)
    shapes[f"{name}_dx"] = (tokens, n, k)
    shapes[f"{name}_dw"] = (k, tokens, n)
  return shapes


def child_matmul(args) -> dict:
  """GFLOP/s (wall and CPU) and relative error of one jitted matmul per shape."""
  import jax
  import numpy as np

  out = {}
  rng = np.random.default_rng(0)
  for name, (m, k, n) in step_matmul_shapes(args.preset, args.vocab, args.batch * args.seq).items():
    a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
    f = jax.jit(lambda x, y: x @ y)
    xa, xb = jax.device_put(a), jax.device_put(b)
    got = np.asarray(f(xa, xb))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    reps = max(3, int(1e10 // (2 * m * k * n)))  # ~10 GFLOP per shape
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
      f(xa, xb).block_until_ready()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    flop = 2 * m * k * n * reps
    out[name] = {"gflops_wall": flop / wall / 1e9, "gflops_cpu": flop / cpu / 1e9, "rel_err": err}
  return out


def child_step(args) -> dict:
  """Compile wall, median step wall / CPU seconds and the losses of 1 + `steps` train steps."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.train.objectives import sft_objective
  from w2s_jax.train.state import create_train_state
  from w2s_jax.train.step import make_train_step

  cfg = get_preset(args.preset, vocab_size=args.vocab, attention=args.attention)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  tx = optax.adamw(1e-4)
  step = jax.jit(make_train_step(sft_objective(), tx, graphdef), donate_argnums=(0,))
  B, S = args.batch, args.seq
  tok = np.random.default_rng(0).integers(3, args.vocab, size=(B, S + 1)).astype(np.int32)
  batch = {"inputs": tok[:, :-1], "targets": tok[:, 1:], "loss_mask": np.ones((B, S), np.int32),
           "positions": np.broadcast_to(np.arange(S, dtype=np.int32), (B, S)).copy(),
           "segment_ids": np.ones((B, S), np.int32)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  state = create_train_state(params, tx, 0)
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  losses, walls, cpus = [], [], []
  for i in range(1 + args.steps):  # the first is a warm-up, not timed
    w0, c0 = time.perf_counter(), time.process_time()
    state, m = compiled(state, batch)
    loss = float(jax.block_until_ready(m["loss"]))
    if i:
      walls.append(time.perf_counter() - w0)
      cpus.append(time.process_time() - c0)
    losses.append(loss)
  return {"compile_s": compile_s, "step_wall_s": statistics.median(walls),
          "step_cpu_s": statistics.median(cpus), "losses": losses}


def run_child(name: str, args) -> dict:
  """A fresh process of option `name` ("option" or "option@attention"); its JSON result or {"error": ...}."""
  option, _, attention = name.partition("@")
  flags, extra = OPTIONS[option]
  env = dict(os.environ, **extra)
  env["XLA_FLAGS"] = flags  # nothing inherited (e.g. the tests' optimisation level 0)
  cmd = [sys.executable, __file__, "--child", f"--work={args.work}", f"--preset={args.preset}",
         f"--vocab={args.vocab}", f"--batch={args.batch}", f"--seq={args.seq}", f"--steps={args.steps}",
         f"--attention={attention or args.attention}"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
  return json.loads(lines[-1])


def summarise(work: str, runs: dict[str, list[dict]]) -> dict:
  """Per option: medians over rounds, ratios to the default (>1 = faster) and numerics vs the default."""
  def med(rs, *keys):
    vals = []
    for r in rs:
      for k in keys:
        r = r[k]
      vals.append(r)
    return statistics.median(vals)

  ok = {n: [r for r in rs if "error" not in r] for n, rs in runs.items()}
  base = ok["default"]
  out = {}
  for name, rs in ok.items():
    if not rs:
      out[name] = {"error": runs[name][0]["error"]}
      continue
    if work == "step":
      wall, cpu = med(rs, "step_wall_s"), med(rs, "step_cpu_s")
      diff = max(abs(a - b) for a, b in zip(rs[0]["losses"], base[0]["losses"], strict=True))
      out[name] = {"step_wall_s": wall, "step_cpu_s": cpu, "compile_s": med(rs, "compile_s"),
                   "wall_ratio": med(base, "step_wall_s") / wall, "cpu_ratio": med(base, "step_cpu_s") / cpu,
                   "max_loss_diff": diff, "losses": rs[0]["losses"], "n": len(rs)}
    else:
      out[name] = {s: {"gflops_wall": med(rs, s, "gflops_wall"), "gflops_cpu": med(rs, s, "gflops_cpu"),
                       "wall_ratio": med(rs, s, "gflops_wall") / med(base, s, "gflops_wall"),
                       "cpu_ratio": med(rs, s, "gflops_cpu") / med(base, s, "gflops_cpu"),
                       "rel_err": max(r[s]["rel_err"] for r in rs)} for s in rs[0]}
  return out


def print_table(work: str, summary: dict) -> None:
  for name, s in summary.items():
    if "error" in s:
      print(f"{name:>20}: error {s['error']}", flush=True)
    elif work == "step":
      print(f"{name:>20}: step wall {s['step_wall_s']:.2f} s ({s['wall_ratio']:.2f}x), "
            f"cpu {s['step_cpu_s']:.2f} s ({s['cpu_ratio']:.2f}x), compile {s['compile_s']:.1f} s, "
            f"max |dloss| {s['max_loss_diff']:.2e}",
            flush=True)
    else:
      w = statistics.geometric_mean([v["wall_ratio"] for v in s.values()])
      c = statistics.geometric_mean([v["cpu_ratio"] for v in s.values()])
      e = max(v["rel_err"] for v in s.values())
      lm = s["lm_head_fwd"]
      print(f"{name:>20}: geomean wall {w:.2f}x, cpu {c:.2f}x; "
            f"lm_head_fwd {lm['gflops_wall']:.0f} GFLOP/s wall, {lm['gflops_cpu']:.0f} per CPU-s; "
            f"max rel err {e:.1e}", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work", choices=["matmul", "step"], default="matmul")
  p.add_argument("--options", default=",".join(OPTIONS))
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--preset", default="ladder-4")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--attention", default="einsum")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--list", action="store_true")
  args = p.parse_args()
  if args.list:
    for name, (flags, extra) in OPTIONS.items():
      print(f"{name:>20}: {flags} {extra or ''}")
    return
  if args.child:
    print(json.dumps(child_step(args) if args.work == "step" else child_matmul(args)))
    return
  names = args.options.split(",")
  if "default" not in names:
    names.insert(0, "default")
  unknown = [n for n in names if n.partition("@")[0] not in OPTIONS]
  if unknown:
    raise SystemExit(f"unknown --options {unknown}; choose from {list(OPTIONS)}")
  load0 = os.getloadavg()
  runs: dict[str, list[dict]] = {n: [] for n in names}
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      runs[name].append(run_child(name, args))
  summary = summarise(args.work, runs)
  print_table(args.work, summary)
  options = {n: OPTIONS[n.partition("@")[0]] for n in names}
  print(json.dumps({"benchmark": "xla_cpu_flags", "work": args.work, "rounds": args.rounds,
                    "preset": args.preset, "batch": args.batch, "seq": args.seq, "attention": args.attention,
                    "options": {n: flags or extra or "(none)" for n, (flags, extra) in options.items()},
                    "load_before": load0, "load_after": os.getloadavg(), "results": summary}))


if __name__ == "__main__":
  main()
