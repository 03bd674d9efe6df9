"""Where a test's time goes in JAX: tracing, lowering to MLIR, XLA compiles and persistent-cache hits.

Opt-in (it costs nothing when off): `W2S_COMPILE_PROFILE=/tmp/prof.jsonl python -m pytest ...` appends one
JSON line per test phase (setup / call / teardown) with its wall seconds and, from `jax.monitoring`'s events
in this process, the seconds spent tracing jaxprs, lowering them and compiling with XLA (a persistent-cache
hit counts its read time), and the counts of compiles and cache hits. Work done in subprocesses a test starts
is not seen (their wall time is in `wall_s`). Summarise with `python tests/compile_profile.py FILE`.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

EVENTS = {
  "/jax/core/compile/jaxpr_trace_duration": "trace_s",
  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
  "/jax/core/compile/backend_compile_duration": "compile_s",
}
_totals: collections.Counter = collections.Counter()
_fun_s: collections.Counter = collections.Counter()  # compile seconds per jitted function's name
_fun_n: collections.Counter = collections.Counter()  # compiles per jitted function's name


def _on_duration(event: str, duration: float, fun_name: str = "?", **_: object) -> None:
  name = EVENTS.get(event)
  if name:
    _totals[name] += duration
    if name == "compile_s":
      _totals["compiles"] += 1
      _fun_s[fun_name] += duration
      _fun_n[fun_name] += 1


def _on_event(event: str, **_: object) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _totals["cache_hits"] += 1


def install() -> None:
  """Registers the listeners (once per process)."""
  import jax.monitoring

  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  jax.monitoring.register_event_listener(_on_event)


def record(path: str, nodeid: str, when: str, wall_s: float,
           before: tuple[collections.Counter, collections.Counter, collections.Counter]) -> None:
  """Appends the phase's line: its wall time and what the listeners counted since `before`, with the
  compile seconds and counts per jitted function (`by_fun`: name -> [compiles, seconds])."""
  before, fun_s, fun_n = before
  row = {"test": nodeid, "when": when, "wall_s": round(wall_s, 3), "worker": os.environ.get(
    "PYTEST_XDIST_WORKER", "main")}
  row.update({k: round(_totals[k] - before[k], 3) for k in ("trace_s", "lower_s", "compile_s")})
  row.update({k: _totals[k] - before[k] for k in ("compiles", "cache_hits")})
  row["by_fun"] = {k: [n - fun_n[k], round(_fun_s[k] - fun_s[k], 3)]
                   for k, n in _fun_n.items() if n > fun_n[k]}
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def snapshot() -> tuple[float, tuple[collections.Counter, collections.Counter, collections.Counter]]:
  return time.perf_counter(), tuple(collections.Counter(c) for c in (_totals, _fun_s, _fun_n))


def summarise(path: str, top: int = 40) -> None:
  """Per module and per test: wall, trace, lower and compile seconds, compiles and cache hits."""
  rows = [json.loads(line) for line in open(path)]
  keys = ("wall_s", "trace_s", "lower_s", "compile_s", "compiles", "cache_hits")
  for level, name in ((lambda r: r["test"].split("::")[0], "module"), (lambda r: r["test"], "test")):
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
      sums[level(r)].update({k: r[k] for k in keys})
    total = collections.Counter()
    for c in sums.values():
      total.update(c)
    print(f"\n== by {name} (top {top} by wall); all: " + "  ".join(f"{k} {total[k]:.0f}" for k in keys))
    print(f"{'wall':>7} {'trace':>6} {'lower':>6} {'compile':>7} {'n_comp':>6} {'hits':>5}  {name}")
    for key, c in sorted(sums.items(), key=lambda kv: -kv[1]["wall_s"])[:top]:
      print(f"{c['wall_s']:7.1f} {c['trace_s']:6.1f} {c['lower_s']:6.1f} {c['compile_s']:7.1f} "
            f"{c['compiles']:6d} {c['cache_hits']:5d}  {key}")
  funs: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
  for r in rows:
    for fun, (n, s) in r.get("by_fun", {}).items():
      funs[fun][0] += n
      funs[fun][1] += s
  print(f"\n== compile seconds by jitted function (top {top})\n{'compile':>7} {'n_comp':>6}  function")
  for fun, (n, s) in sorted(funs.items(), key=lambda kv: -kv[1][1])[:top]:
    print(f"{s:7.1f} {n:6d}  {fun}")


if __name__ == "__main__":
  summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
