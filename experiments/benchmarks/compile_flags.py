"""XLA:CPU compile cost of the tests' typical programs under sets of compile flags, each in fresh processes.

  python experiments/benchmarks/compile_flags.py [--rounds=5] [--options=defaults,opt0,tests]

The test suite's time is mostly XLA compiling tiny programs, so tests/conftest.py sets flags that make
XLA:CPU compile faster (`TEST_XLA_FLAGS`; tests/train/test_xla_test_flags.py checks that results agree with
XLA's defaults). This measures what each flag buys on three programs the suite compiles over and over, at
the tests' tiny preset: the SFT train step (AdamW with cosine schedule, weight decay and clipping; the
non-finite guard) on an 8 x 64 batch, the model init plus optimizer state (`Runtime.fresh`'s `build`), and
a `generate` call (prefill + decode loop, 4 prompts of 16 tokens, 32 new tokens; its compile is most of
its time).

Each option runs in its own process (XLA reads `XLA_FLAGS` at start-up, nothing inherited, no
compilation cache); options are interleaved, the order rotated each round. Reported per option and
program: the median (min-max) over rounds of the compile's CPU seconds (process time over all threads,
the figure that matters when the two test workers already fill both cores) and wall seconds, and the
CPU ratio to `opt0` (the tests' flags before session 12). The last line is one JSON object with the load
averages before and after (`loaded` when they exceeded the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _bench import cores, load_record

OPT0 = "--xla_backend_optimization_level=0"
OPTIONS = {
  "defaults": "",  # what users run
  "opt0": OPT0,  # no LLVM optimisation: the tests' flags up to session 11
  "opt0_no_fusion_emitters": f"{OPT0} --xla_cpu_use_fusion_emitters=false",
  "opt0_split1": f"{OPT0} --xla_cpu_parallel_codegen_split_count=1",
  # tests/conftest.py's TEST_XLA_FLAGS
  "tests": f"{OPT0} --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1",
}
PROGRAMS = ("step", "init", "generate")


def child() -> dict:
  """(CPU s, wall s) of compiling each program once in this process."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from step_compile import OPTIMIZER, abstract_step_inputs

  from w2s_jax.models.presets import get_preset
  from w2s_jax.models.transformer import Transformer
  from w2s_jax.sampling.sampler import SamplingConfig, generate
  from w2s_jax.train.objectives import sft_objective
  from w2s_jax.train.optim import make_optimizer
  from w2s_jax.train.state import create_train_state
  from w2s_jax.train.step import make_train_step

  def timed(fn) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w

  cfg = get_preset("tiny", max_seq_len=128)
  tx = make_optimizer(OPTIMIZER, total_steps=100)  # step_compile.py's: AdamW, cosine, decay, clipping
  graphdef, _, state, batch = abstract_step_inputs(cfg, tx, 8, 64)
  out = {"step": timed(jax.jit(make_train_step(sft_objective(), tx, graphdef)).lower(state, batch).compile)}
  build = lambda: create_train_state(nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[1], tx, 0)
  out["init"] = timed(jax.jit(build).lower().compile)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  prompts = jnp.ones((4, 16), jnp.int32)
  sample = lambda: jax.block_until_ready(jax.tree.leaves(generate(
    model, prompts, jnp.ones((4, 16), bool), jax.random.key(0), SamplingConfig(max_new_tokens=32))))
  out["generate"] = timed(sample)
  return out


def run_child(option: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(XLA_FLAGS=OPTIONS[option], JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"option {option!r} failed: {proc.stderr.strip()[-500:]}")
  return json.loads(lines[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--options", default=",".join(OPTIONS))
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(child()))
    return
  names = args.options.split(",")
  if "opt0" not in names:
    names.insert(0, "opt0")
  unknown = [n for n in names if n not in OPTIONS]
  if unknown:
    raise SystemExit(f"unknown --options {unknown}; choose from {list(OPTIONS)}")
  load0 = os.getloadavg()[0]
  runs: dict[str, list[dict]] = {n: [] for n in names}
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      runs[name].append(run_child(name))
  base = {prog: statistics.median(x[prog][0] for x in runs["opt0"]) for prog in PROGRAMS}
  results = {}
  for name, rs in runs.items():
    results[name] = {}
    for prog in PROGRAMS:
      cpu, wall = [x[prog][0] for x in rs], [x[prog][1] for x in rs]
      results[name][prog] = {
        "cpu_median_s": round(statistics.median(cpu), 3), "cpu_min_s": round(min(cpu), 3),
        "cpu_max_s": round(max(cpu), 3), "wall_median_s": round(statistics.median(wall), 3),
        "cpu_vs_opt0": round(statistics.median(cpu) / base[prog], 2)}
    cells = "  ".join(f"{prog} {v['cpu_median_s']:.2f} ({v['cpu_min_s']:.2f}-{v['cpu_max_s']:.2f}) s "
                      f"x{v['cpu_vs_opt0']:.2f}" for prog, v in results[name].items())
    print(f"{name:>24}: compile CPU {cells}", flush=True)
  print(json.dumps({"benchmark": "compile_flags", "rounds": args.rounds,
                    "options": {n: OPTIONS[n] for n in names}, "results": results,
                    **load_record(load0, cores())}))


if __name__ == "__main__":
  main()
