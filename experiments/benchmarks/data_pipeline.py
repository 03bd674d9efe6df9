"""Data pipeline throughput against the tiny model's train-step rate, in one process.

COMMAND:
  python experiments/benchmarks/data_pipeline.py                       # gcd, the smoke run's data and shape
  python experiments/benchmarks/data_pipeline.py --task=gsm_symbolic --seq_len=1024

The pipeline is timed end to end as training uses it: records read from the `w2s_reasoning` TFDS build
through `tfds.data_source` (array_record, no TensorFlow), decoded, formatted, tokenised, packed into rows
of `seq_len`, then every batch fetched from the shuffled random-access stream (`stream[i]`). The train
step is the jitted step of the tiny preset on a batch of the same shape (median of `--repeats`).
Both rates are in examples/s (an example = one problem with its worked solution; a packed batch holds
several). The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import bench_jax  # noqa: E402

from w2s_jax.data import builders, pipeline, reasoning, sft_sources  # noqa: E402
from w2s_jax.data.tokenizers import ByteTokenizer  # noqa: E402


def pipeline_rate(task: str, data_dir: str, seq_len: int, batch: int) -> dict:
  """Examples/s of the whole pipeline (read → tokenise → pack → fetch every batch once)."""
  source = builders.build("w2s_reasoning", task, data_dir=data_dir).as_data_source()["train"]
  t0 = time.perf_counter()
  problems = [reasoning.Problem.from_record(r) for r in builders.read_all(source)]
  pairs = [(sft_sources.reasoning_prompt(p), p.solution) for p in problems]
  t_read = time.perf_counter() - t0
  data = pipeline.token_data(pairs, pairs[:64], ByteTokenizer(), seq_len=seq_len, batch_size=batch,
                             eval_batches=1, seed=0, overlong="drop")
  t_pack = time.perf_counter() - t0 - t_read
  stats = data.stats["train"]
  n_batches = stats.rows // batch
  t1 = time.perf_counter()
  for i in range(n_batches):
    b = data.train[i]
  fetch = time.perf_counter() - t1
  assert b["inputs"].shape == (batch, seq_len)
  total = time.perf_counter() - t0
  kept = stats.examples - stats.dropped
  return {"examples": kept, "dropped": stats.dropped, "rows": stats.rows, "read_s": t_read,
          "pack_s": t_pack, "fetch_s": fetch, "examples_per_s": kept / total,
          "batches_per_s_fetch": n_batches / max(fetch, 1e-9),
          "examples_per_batch": kept / stats.rows * batch}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--task", default="gcd", choices=sorted(reasoning.TASKS))
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: a temporary folder)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    builders.build("w2s_reasoning", args.task, data_dir=data_dir)  # build once, outside the timing
    runs = [pipeline_rate(args.task, data_dir, args.seq_len, args.batch) for _ in range(3)]
  pipe = min(runs, key=lambda r: -r["examples_per_s"]) | {
    "examples_per_s_median": statistics.median(r["examples_per_s"] for r in runs)}
  step = bench_jax("tiny", args.batch, args.seq_len, args.repeats, "float32", 512)
  train_eps = pipe["examples_per_batch"] / step["step_s"]
  ratio = pipe["examples_per_s_median"] / train_eps
  print(f"pipeline   {pipe['examples_per_s_median']:>10,.0f} examples/s   ({args.task}, "
        f"{pipe['examples']} examples → {pipe['rows']} rows of {args.seq_len}; read {pipe['read_s']:.2f}s, "
        f"tokenise+pack {pipe['pack_s']:.2f}s, fetch {pipe['batches_per_s_fetch']:,.0f} batches/s)")
  print(f"train step {train_eps:>10,.0f} examples/s   (tiny, batch {args.batch}×{args.seq_len}, "
        f"{step['step_s'] * 1e3:.1f} ms/step, {pipe['examples_per_batch']:.1f} examples/batch)")
  print(f"ratio      {ratio:>10.1f}×  (pipeline / train step; ≥ 10× means data never bottlenecks training)")
  print(json.dumps({"task": args.task, "seq_len": args.seq_len, "batch": args.batch, "pipeline": pipe,
                    "train_step_s": step["step_s"], "train_examples_per_s": train_eps, "ratio": ratio,
                    "pipeline_runs_examples_per_s": [r["examples_per_s"] for r in runs],
                    "step_times": step["times"], "numpy": np.__version__}))


if __name__ == "__main__":
  main()
