"""Tests of w2s_jax.checkpoint: exact resume, resharding, retention, atomicity, errors."""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from w2s_jax.checkpoint import Checkpointer
from w2s_jax.train.state import TrainState, create_train_state, split_params

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = {"epoch": 1, "index": 123, "seed": 0}


class _Mlp(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.up = nnx.Linear(16, 32, rngs=rngs)
    self.down = nnx.Linear(32, 8, rngs=rngs)

  def __call__(self, x):
    return self.down(jax.nn.relu(self.up(x)))


@functools.cache
def _trained_state() -> TrainState:
  """A TrainState after two AdamW updates, with non-trivial counters (built once, jitted)."""
  graphdef, params, _ = split_params(_Mlp(nnx.Rngs(0)))
  tx = optax.adamw(1e-2)
  x = jax.random.normal(jax.random.key(1), (4, 16))

  @jax.jit
  def build(params):
    state = create_train_state(params, tx, seed=0)
    for _ in range(2):
      grads = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(x) ** 2))(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    zero = state.step
    return state.replace(step=zero + 7, nonfinite_streak=zero + 1, nonfinite_total=zero + 3)

  return build(params)


def _abstract(state, sharding_of=lambda path, x: None, replace=None):
  """ShapeDtypeStructs of `state`; `replace` maps a leaf's keystr to the struct to use instead."""

  def leaf(path, x):
    default = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(path, x))
    return (replace or {}).get(jax.tree_util.keystr(path), default)

  return jax.tree_util.tree_map_with_path(leaf, state)


def _assert_identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    assert x.dtype == y.dtype, jax.tree_util.keystr(path)
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def test_restore_is_bit_identical(tmp_path):
  state = _trained_state()
  device = jax.devices()[0]
  config = {"lr": 0.01, "model": {"width": 32}}
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(7, state, data_state=DATA, config=config)
    assert not ckpt.save(7, state, data_state=DATA)  # an existing step is never rewritten
    ckpt.wait()
    assert ckpt.all_steps() == [7]
  with Checkpointer(tmp_path) as ckpt:
    restored, data, cfg = ckpt.restore(_abstract(state, lambda p, x: x.sharding))
  _assert_identical(state, restored)
  assert isinstance(restored, TrainState) and isinstance(restored.params, nnx.State)
  assert restored.params["up"]["kernel"][...].sharding.device_set == {device}
  assert data == DATA and cfg == config


def test_restore_onto_other_sharding_and_without_config(tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py must set 8 CPU devices"
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  state = jax.device_put(_trained_state(), NamedSharding(mesh, P()))  # replicated

  def sharding_of(path, x):  # every matrix split 2 x 4 over the mesh, the rest replicated
    return NamedSharding(mesh, P("data", "model") if x.ndim == 2 else P())

  with Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, state, data_state=DATA)
    restored, data, cfg = ckpt.restore(_abstract(state, sharding_of))
  _assert_identical(state, restored)
  kernel = restored.params["up"]["kernel"][...]
  assert kernel.sharding == NamedSharding(mesh, P("data", "model"))
  assert kernel.addressable_shards[0].data.shape == (8, 8)
  assert data == DATA and cfg is None


def test_keep_n_retention(tmp_path):
  state = {"w": jnp.arange(6.0)}
  with Checkpointer(tmp_path, keep=2) as ckpt:
    for step in range(1, 6):
      ckpt.save(step, jax.tree.map(lambda x, s=step: x + s, state), data_state={"index": step})
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5]
    restored, data, _ = ckpt.restore(_abstract(state), step=4)
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4", "5"]
  np.testing.assert_array_equal(restored["w"], np.arange(6.0) + 4)
  assert data == {"index": 4}


def test_async_save_is_safe_with_donation_and_mutation(tmp_path):
  state = {"w": jax.random.normal(jax.random.key(0), (256, 256))}
  expected = np.asarray(state["w"]).copy()
  data = {"index": 1}
  update = jax.jit(lambda s: {"w": s["w"] * 2.0 + 1.0}, donate_argnums=0)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, data_state=data)
    state = update(state)  # overwrite/donate while the write may still be in flight
    data["index"] = 999
    ckpt.wait()
    restored, restored_data, _ = ckpt.restore(_abstract(state))
  np.testing.assert_array_equal(np.asarray(restored["w"]), expected)
  assert restored_data == {"index": 1}


_KILLED_CHILD = """
import os, signal, sys, time
import jax, jax.numpy as jnp
from w2s_jax.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1])
ckpt.save(1, {"w": jnp.ones((4,))}, data_state={"index": 1})
ckpt.wait()
big = {"w": jax.random.normal(jax.random.key(0), (8 * 1024 * 1024,))}  # 32 MiB, incompressible
ckpt.save(2, big, data_state={"index": 2})
deadline = time.time() + 30
while not any(".orbax-checkpoint-tmp" in p for p in os.listdir(sys.argv[1])):
  assert time.time() < deadline, "the temporary directory never appeared"
  time.sleep(0.001)
os.kill(os.getpid(), signal.SIGKILL)  # mid-write: files are being written in the background
"""


def test_save_killed_midway_is_never_reported(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  proc = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(_KILLED_CHILD), str(tmp_path)],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  names = sorted(p.name for p in tmp_path.iterdir())
  assert "1" in names and "2" not in names, names  # the kill really was mid-save
  assert any(n.startswith("2.orbax-checkpoint-tmp") for n in names), names

  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    restored, data, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((4,), jnp.float32)})
    np.testing.assert_array_equal(restored["w"], np.ones(4))
    assert data == {"index": 1}
    with pytest.raises(FileNotFoundError, match="step 2"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((4,), jnp.float32)}, step=2)
    assert ckpt.save(2, {"w": jnp.zeros((4,))}, data_state={"index": 2})
    ckpt.wait()
    assert ckpt.latest_step() == 2
  assert not any(".orbax-checkpoint-tmp" in p.name for p in tmp_path.iterdir())


def test_leftover_tmp_dir_is_ignored_and_cleaned(tmp_path):
  state = {"w": jnp.arange(3.0)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, data_state=DATA)
  leftover = tmp_path / "5.orbax-checkpoint-tmp-1234567"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state" / "junk").write_bytes(b"\0" * 100)
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1]
    assert ckpt.restore(_abstract(state))[1] == DATA
    ckpt.save(2, state, data_state=DATA)  # a save waits for the start-up clean-up
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
  assert not leftover.exists()


def test_errors_name_the_directory_and_the_leaf(tmp_path):
  empty = tmp_path / "empty"
  with Checkpointer(empty) as ckpt, pytest.raises(FileNotFoundError, match=str(empty)):
    ckpt.restore({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})

  state = _trained_state()
  with Checkpointer(tmp_path / "run") as ckpt:
    ckpt.save(1, state, data_state=DATA)
    ckpt.wait()
    wrong = jax.ShapeDtypeStruct((32, 9), jnp.float32)
    bad_shape = _abstract(state, replace={".params['down']['kernel'].value": wrong})
    with pytest.raises(ValueError, match=r"params/down/kernel/value.*\(32, 8\).*\(32, 9\)"):
      ckpt.restore(bad_shape)
    bad_dtype = _abstract(state).replace(rng=jax.ShapeDtypeStruct((2,), jnp.int32))
    with pytest.raises(ValueError, match=r"'rng'.*uint32.*int32"):
      ckpt.restore(bad_dtype)
    with pytest.raises(ValueError, match="'extra'"):
      ckpt.restore({"extra": jax.ShapeDtypeStruct((1,), jnp.float32)})
    with pytest.raises(TypeError):
      ckpt.save(2, state, data_state={"bad": object()})


def test_one_writer_per_folder(tmp_path):
  # A rerun started while a preempted run still finishes its save used to delete that save's temporary
  # folder (Orbax cleans up `*.orbax-checkpoint-tmp` at start): a second writer is refused instead.
  # (After SIGKILL the lock is gone: test_save_killed_midway_is_never_reported reopens the folder.)
  first = Checkpointer(tmp_path)
  first.save(1, {"w": jnp.ones((2,))}, data_state=DATA)
  with pytest.raises(RuntimeError, match=rf"{tmp_path}.*another process \(pid {os.getpid()}\)"):
    Checkpointer(tmp_path)
  with Checkpointer(tmp_path, read_only=True) as reader:  # readers of a live run are welcome
    first.wait()
    assert reader.all_steps() == [1]
  first.close()
  with Checkpointer(tmp_path) as again:
    assert again.latest_step() == 1
