"""Shared test helpers, among them `run_main`: `python -m w2s_jax.main` run inside the test process."""

import contextlib
import dataclasses
import io
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import flags, logging
from flax import nnx

from w2s_jax import main as w2s_main
from w2s_jax.config_files import load_config
from w2s_jax.models.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]

# Gemma-flavoured tiny config: every optional feature on (sliding window 3, every 2nd layer global).
GEMMA_TINY = get_preset(
  "tiny",
  n_layers=3,
  mlp_activation="gelu_tanh",
  norm_offset=1.0,
  qk_norm=True,
  rope_local_theta=100.0,
  scale_embeddings=True,
  attn_logit_softcap=5.0,
  final_logit_softcap=10.0,
  query_pre_attn_scalar=24.0,
  sliding_window=3,
  sliding_window_pattern=2,
  post_norms=True,
)

__all__ = ["GEMMA_TINY", "ROOT", "MainResult", "load_config", "run_main"]


class Linear4(nnx.Module):
  """The smallest trainable model of the loop tests: one 4 -> 1 linear layer."""

  def __init__(self, rngs: nnx.Rngs):
    self.w = nnx.Linear(4, 1, rngs=rngs)


def squared_output_objective(model, batch, rng):
  """Σ (x·W + b)² over the batch, weight 1, no metrics (an objective of `make_train_step`)."""
  del rng
  return jnp.sum(model.w(batch["x"]) ** 2), jnp.ones(()), {}


@dataclasses.dataclass(frozen=True)
class MainResult:
  """What a `python -m w2s_jax.main` process would leave: its exit status and its two output streams."""

  returncode: int
  stdout: str
  stderr: str


@contextlib.contextmanager
def _environ(env: Mapping[str, str | None]) -> Iterator[None]:
  """Sets (or, for None, removes) environment variables and restores every one of them afterwards."""
  old = {k: os.environ.get(k) for k in env}
  try:
    _set_environ(env)
    yield
  finally:
    _set_environ(old)


def _set_environ(env: Mapping[str, str | None]) -> None:
  for k, v in env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = str(v)


@contextlib.contextmanager
def _visible_devices(n: int | None) -> Iterator[None]:
  """Shows the code only the first `n` of the worker's devices (all when None), as an n-device process.

  A `python -m w2s_jax.main` subprocess of the tests sees one CPU device (no `cpu_devices` set), while the
  pytest worker has 8 (conftest.py): `mesh.data=-1` would otherwise span 8 devices.
  """
  if n is None:
    yield
    return
  names = ("devices", "device_count", "local_devices", "local_device_count")
  old = {name: getattr(jax, name) for name in names}
  first = jax.devices()[:n]
  if len(first) < n:
    raise ValueError(f"run_main(devices={n}) needs {n} devices; this process has {len(first)}")
  new = {"devices": lambda backend=None: list(first), "device_count": lambda backend=None: len(first),
         "local_devices": lambda process_index=None, backend=None, host_id=None: list(first),
         "local_device_count": lambda backend=None: len(first)}
  try:
    for name in names:
      setattr(jax, name, new[name])
    yield
  finally:
    for name in names:
      setattr(jax, name, old[name])


def _reset_flags() -> None:
  """Unparses absl's flags and drops the `--config.KEY` flags ml_collections defined for the last run."""
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()


def _call_main(argv: list[str]) -> int:
  """`app.run(main, flags_parser=_parse_flags)` without absl's process set-up; returns the exit status."""
  try:
    w2s_main.main(w2s_main._parse_flags(argv))
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except Exception:  # noqa: BLE001 (what a process does with an uncaught exception: traceback, status 1)
    traceback.print_exc()
    return 1
  return 0


def run_main(argv: list[str], *, env: Mapping[str, str | None] | None = None, devices: int | None = 1,
             cwd: str | os.PathLike = ROOT) -> MainResult:
  """Runs `python -m w2s_jax.main *argv` inside this process, as the subprocess would.

  absl's flags are global: they are unparsed (and the `--config.KEY` flags removed) before and after the
  run, so no flag of one run reaches the next. `sys.exit` becomes the return code, an uncaught exception
  code 1 with its traceback on stderr; stdout and stderr are captured (absl's log lines are not).
  A config that sets `cpu_devices` cannot run here (JAX's devices are fixed at start): use a subprocess.

  Args:
    argv: the arguments after `python -m w2s_jax.main`, e.g. `["--config=configs/sft_tiny.py:smoke", ...]`.
    env: environment variables set for the run (None removes one) and restored afterwards.
    devices: how many of the worker's devices the run sees (1: a test subprocess; None: all 8).
    cwd: the working directory of the run (relative `--config` paths), restored afterwards.

  Returns:
    `MainResult(returncode, stdout, stderr)`.
  """
  out, err = io.StringIO(), io.StringIO()
  old_argv, old_cwd, verbosity = sys.argv, os.getcwd(), logging.get_verbosity()
  _reset_flags()
  try:
    sys.argv = ["w2s_jax.main", *map(str, argv)]  # ml_collections reads `--config.KEY` overrides here
    os.chdir(cwd)
    with _environ(env or {}), _visible_devices(devices):
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _call_main(list(sys.argv))
  finally:
    sys.argv = old_argv
    os.chdir(old_cwd)
    logging.set_verbosity(verbosity)
    _reset_flags()
  return MainResult(code, out.getvalue(), err.getvalue())
