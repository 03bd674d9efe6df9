"""Test-wide settings: 8 simulated CPU devices before anything touches a backend; one JAX compilation cache
for the whole run; runs that several test modules start from, built once per run; heavy test modules first.

The compilation cache is a folder made once per `pytest` run (by the controller; xdist workers and every
subprocess a test starts inherit it through `JAX_COMPILATION_CACHE_DIR`), so a program that several tests,
workers or `python -m w2s_jax.main` runs compile is compiled once. Entries are keyed by the program, the
compile options and the JAX/XLA version, so a hit returns the executable a fresh compile would build.
A size limit turns on JAX's file lock, which makes concurrent readers and writers (two workers, the
multi-process tests) safe. A folder set by the caller (`JAX_COMPILATION_CACHE_DIR`) is used as it is.

The shared runs (`rl_smoke_sft`, tests/w2s's `ladder0_smoke_sft`, the ladder in `w2s_cache`) are built by
the first worker that needs them, under a file lock in the run's temp folder; every worker copies them.

XLA's CPU backend compiles for speed of compiling, not of running (`TEST_XLA_FLAGS`, added to `XLA_FLAGS`;
subprocesses inherit them unless a test drops `XLA_FLAGS`): the tests' programs are tiny, so the compile is
most of their cost. Without LLVM optimisation (`--xla_backend_optimization_level=0`); fusions emitted by
XLA's elemental IR emitter instead of its MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`: the
same HLO after the same passes, lowered by the older path, about a third of the tiny train step's compile
CPU time); one LLVM module compiled on one thread (`--xla_cpu_parallel_codegen_split_count=1`: the two
workers already fill the two cores). `experiments/benchmarks/compile_flags.py` measures each;
tests/train/test_xla_test_flags.py checks that train steps and logits under XLA's defaults (what users run)
agree with these. The flags are jax 0.10.2's (pinned in pyproject.toml); XLA aborts at start-up on a flag it
does not know, naming it, so a jax upgrade that drops one stops the first test with that name.
"""

import atexit
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                  "--xla_cpu_parallel_codegen_split_count=1")
for _flag in TEST_XLA_FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller, or a run without xdist
  _cache_dir = tempfile.mkdtemp(prefix="w2s_jax_test_xla_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))  # a limit enables the file lock
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

_WIDE_SCOPES = ("module", "package", "session")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None],
               leaf: str = "sft") -> Path:
  """A folder `build(folder)` fills once per pytest run, copied into this worker's temp folder.

  The first worker to ask builds it under a file lock in the run's shared temp folder (xdist workers'
  temp folders are siblings); the others wait for it and copy it. Each worker gets its own copy, since a
  run folder is opened by one writer at a time (reloading a finished SFT run opens its checkpointer).
  """
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  built = shared / f"{name}_built" / leaf
  with open(shared / f"{name}.lock", "a") as lock:  # released when closed
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (built.parent / "done").exists():
      shutil.rmtree(built.parent, ignore_errors=True)  # a build that failed half-way
      build(built)
      (built.parent / "done").touch()
  folder = tmp_path_factory.mktemp(name) / leaf
  shutil.copytree(built, folder)
  return folder


@pytest.fixture(scope="session")
def rl_smoke_sft(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """The RL smoke configs' SFT phase, built once per pytest run: pass it as `sft.workdir` with `mesh.data=1`.

  Every `configs/rl_base.py`-based smoke config (grpo, gspo, tempo, treerl, vineppo, prm_tiny, ...) has the
  same SFT section; with `mesh.data=1` (the tests' one-device mesh, and what a one-device subprocess uses)
  their SFT configs are equal, so `rl.sft_init.run_sft` reloads this folder instead of training again.
  """
  from w2s_jax.config_files import load_config
  from w2s_jax.rl.sft_init import run_sft

  def build(folder: Path) -> None:
    config = load_config("grpo_tiny", "smoke")
    config.mesh.data = 1
    config.sft.workdir = str(folder)
    run_sft(config, folder.parent)

  return built_once(tmp_path_factory, "rl_smoke_sft", build)


@pytest.fixture(scope="session")
def w2s_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A `W2S_JAX_CACHE` folder per worker, for runs whose cached rungs / SFT models others may reuse.

  Entries are keyed by their config's hash (`w2s.ladder`), so a test finds a rung only when its settings are
  the same; per worker, so two processes never train into one folder at once. It starts with the ladder
  the W2S sweep smokes share (configs/w2s_sweep.py:smoke's ladder-0 and ladder-1 at
  `ladder.total_steps=4`: tests/w2s's protocol, debate, deception and pretrained-rung sweeps and
  tests/rl/test_own_task_runs.py), pretrained once per pytest run (`built_once`).
  """
  from w2s_jax.config_files import load_config
  from w2s_jax.w2s.rungs import load_rungs

  def build(folder: Path) -> None:
    config = load_config("w2s_sweep", "smoke")
    config.ladder.total_steps = 4
    config.ladder.cache_dir = str(folder / "ladder")
    load_rungs(list(config.ladder.sizes), config)

  return built_once(tmp_path_factory, "w2s_cache", build, "cache")


_PROFILE = os.environ.get("W2S_COMPILE_PROFILE")  # see tests/compile_profile.py
if _PROFILE:
  from tests import compile_profile

  compile_profile.install()

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_setup(item: pytest.Item):
    return (yield from _profiled(item, "setup"))

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_call(item: pytest.Item):
    return (yield from _profiled(item, "call"))

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_teardown(item: pytest.Item):
    return (yield from _profiled(item, "teardown"))

  def _profiled(item: pytest.Item, when: str):
    start, before = compile_profile.snapshot()
    try:
      return (yield)
    finally:
      compile_profile.record(_PROFILE, item.nodeid, when, compile_profile.time.perf_counter() - start, before)


def _is_heavy(item: pytest.Item) -> bool:
  """A `slow` test, or one using a module-or-wider fixture of this test tree (a shared run): one defined in
  its module or in a conftest.py above it (`rl_smoke_sft`, `w2s_cache`, tests/w2s's `ladder0_smoke_sft`),
  not pytest's own (`tmp_path_factory`, whose baseid is "")."""
  if item.get_closest_marker("slow") is not None:
    return True
  module = item.nodeid.split("::")[0]
  ours = lambda d: d.baseid and (module == d.baseid or module.startswith(f"{d.baseid}/"))
  defs = item._fixtureinfo.name2fixturedefs.values()
  return any(d.scope in _WIDE_SCOPES and ours(d) for ds in defs for d in ds)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """Heavy modules first, each module's tests together and in their order.

  With `--dist loadscope` (pyproject's addopts) xdist hands out whole modules, so a module's shared fixtures
  are built on one worker only; starting the long modules first lets the workers finish together.
  """
  heavy = {item.nodeid.split("::")[0] for item in items if _is_heavy(item)}
  items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)
