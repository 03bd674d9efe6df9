"""What every benchmark here shares: load records, spread statistics, and the Tunix peer process.

Trust rules (issue #18): each script records the 1-minute load average before and after its timed
work, repeats every measurement (systems interleaved, so a burst of load hits all of them), reports
medians with the min-max spread, and flags (`"loaded": true`) a run whose load exceeded the cores it
uses: such a run's figures are not speedups, only same-run ratios at best.

Tunix (google-tunix 0.1.7) pulls many packages, so it lives in its own virtualenv; the benchmark
starts `tunix_peer.py` there as a subprocess that loads the same checkpoint and answers timing
requests over stdin/stdout (one JSON object a line), so its repeats interleave with ours. Set up once:

  python3 -m venv /work/venvs/tunix && /work/venvs/tunix/bin/pip install google-tunix==0.1.7

and pass `--tunix-python=/work/venvs/tunix/bin/python` (or set W2S_TUNIX_PYTHON). Without it the JSON
says `"tunix": "unavailable (<reason>)"`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PEER = Path(__file__).with_name("tunix_peer.py")


def cores() -> int:
  """CPU cores this process may run on."""
  return len(os.sched_getaffinity(0))


def load_record(before: float, cores_used: int) -> dict:
  """Load averages before/after the timed work and whether they exceeded the cores used."""
  after = os.getloadavg()[0]
  return {"load_before": round(before, 2), "load_after": round(after, 2), "cores": cores_used,
          "loaded": max(before, after) > cores_used}


def spread(times: list[float]) -> dict:
  """Median, min and max of repeated timings (seconds), and how many."""
  return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def interleaved_times(systems: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
  """Wall seconds of each system's call, `repeats` rounds with the systems interleaved (after 2 warm-ups)."""
  for fn in systems.values():  # warm-up: compiles, allocator
    fn(), fn()
  times = {name: [] for name in systems}
  for _ in range(repeats):
    for name, fn in systems.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return times


def add_tunix_flag(parser) -> None:
  parser.add_argument("--tunix-python", default=os.environ.get("W2S_TUNIX_PYTHON", ""),
                      help="python of a virtualenv with google-tunix==0.1.7 (or env W2S_TUNIX_PYTHON)")


class TunixPeer:
  """A `tunix_peer.py` subprocess in Tunix's virtualenv: `setup(task, **args)`, then `run()` per repeat."""

  def __init__(self, python: str):
    if not python:
      raise RuntimeError("no --tunix-python / W2S_TUNIX_PYTHON given")
    if not Path(python).exists():
      raise RuntimeError(f"{python} does not exist")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    self.proc = subprocess.Popen([python, str(PEER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=sys.stderr, text=True, env=env)
    self.version = self._call({"op": "version"})["version"]

  def _call(self, request: dict) -> dict:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f"tunix_peer.py exited (code {self.proc.poll()}); see its stderr above")
      if line.startswith("{"):
        reply = json.loads(line)
        break
    if "error" in reply:
      raise RuntimeError(f"tunix_peer.py: {reply['error']}")
    return reply

  def setup(self, task: str, **args) -> dict:
    """Builds `task` ("sampler", "sft", "dpo", "grpo") on the checkpoint in args; returns its info."""
    return self._call({"op": "setup", "task": task, "args": args})

  def run(self) -> dict:
    """One timed repeat of the set-up task: {"s": seconds, ...}."""
    return self._call({"op": "run"})

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


def start_tunix(python: str) -> tuple[TunixPeer | None, str]:
  """(peer, "google-tunix <version>") or (None, "unavailable (<reason>)")."""
  try:
    peer = TunixPeer(python)
  except (RuntimeError, OSError) as e:
    return None, f"unavailable ({e})"
  return peer, f"google-tunix {peer.version}"
