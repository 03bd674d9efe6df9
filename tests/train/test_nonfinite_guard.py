"""The non-finite guard: non-finite updates are skipped and named, never checkpointed; loops release locks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import Linear4, load_config, squared_output_objective
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl import roles
from w2s_jax.train import runtime
from w2s_jax.train import step as step_lib
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import Setup, train
from w2s_jax.train.state import create_train_state


def test_all_finite_matches_numpy_leaf_by_leaf():
  # `_all_finite` reduces leaves of one shape together; the verdict must still be every leaf's, whichever
  # leaf (same shape as others or not, any float dtype) holds the inf or NaN; integer leaves are ignored.
  shapes = [(3, 2), (3, 2), (3, 2), (4,), (2, 2, 2), (4,)]
  dtypes = [jnp.float32, jnp.bfloat16, jnp.float32, jnp.float32, jnp.float16, jnp.bfloat16]
  check = jax.jit(step_lib._all_finite)
  rng = np.random.default_rng(0)
  for trial in range(24):
    tree = {f"w{i}": np.asarray(rng.normal(size=s), np.float32) for i, s in enumerate(shapes)}
    if trial % 4:  # three trials in four put one to three bad values in random leaves
      for _ in range(trial % 4):
        name = f"w{rng.integers(len(shapes))}"
        flat = tree[name].reshape(-1)
        flat[rng.integers(flat.size)] = rng.choice([np.inf, -np.inf, np.nan])
    want = all(np.isfinite(x).all() for x in tree.values())
    leaves = {k: jnp.asarray(v, d) for (k, v), d in zip(tree.items(), dtypes, strict=True)}
    leaves["count"] = jnp.int32(2**31 - 1)  # integers never count as non-finite
    assert bool(check(leaves)) is want, (trial, tree)
  assert bool(step_lib._all_finite({"count": jnp.int32(3)})) is True


def test_an_infinite_learning_rate_is_skipped_and_named():
  # The loss and gradient are finite; only the update is not. The old guard applied it (NaN weights).
  graphdef, params = nnx.split(Linear4(nnx.Rngs(0)))
  tx = optax.adam(jnp.inf)
  step = jax.jit(step_lib.make_train_step(squared_output_objective, tx, graphdef))
  state0 = create_train_state(params, tx, 0)
  state, m = step(state0, {"x": jnp.ones((2, 4))})
  assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
  assert int(m["nonfinite_cause"]) == step_lib.NONFINITE_UPDATE and int(state.nonfinite_streak) == 1
  for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(state0.params), strict=True):
    np.testing.assert_array_equal(new, old)
  assert "learning rate" in step_lib.nonfinite_message(3, int(m["nonfinite_cause"]), 3, float("inf"))


def test_causes_are_told_apart():
  assert "data near batch 9" in step_lib.nonfinite_message(2, step_lib.NONFINITE_LOSS, 9, 1e-3)
  assert "initialisation" in step_lib.nonfinite_message(3, step_lib.NONFINITE_LOSS, 3, 1e-3)
  assert "clip_norm" in step_lib.nonfinite_message(3, step_lib.NONFINITE_GRAD, 7, 1e-3)


def test_infinite_lr_stops_the_loop_with_no_checkpoint(tmp_path):
  # Before: the update turned every weight NaN at step 1 and checkpoints 1-3 were saved mid-streak.
  c = train_defaults(total_steps=4, batch_size=2, lr=float("inf"))
  c.checkpoint_every_steps, c.max_nonfinite_streak, c.keep_checkpoints, c.mesh.data = 1, 3, 10, 1
  batches = [{"x": np.ones((2, 4), np.float32)}] * 4
  setup = Setup(make_model=Linear4, objective=squared_output_objective, train_batches=batches,
                eval_batches=[])
  with pytest.raises(step_lib.NonFiniteError, match=r"3 updates in a row.*optimizer\.lr=inf"):
    train(c, tmp_path, setup)
  steps = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps == [], steps
  with Checkpointer(tmp_path / "checkpoints") as again:  # the loop released the folder's lock
    assert again.latest_step() is None


def _random_params(config, model_section):
  """Random params made as the SFT phase makes its own (under the run's mesh and rules, inside jit)."""
  from w2s_jax import sharding as shd
  from w2s_jax.models.presets import from_section

  with jax.set_mesh(shd.make_mesh(dict(config.mesh))), nnx.logical_axis_rules(shd.get_rules(config.sharding)):
    return jax.jit(lambda: nnx.split(Transformer(from_section(model_section), rngs=nnx.Rngs(0)))[1])()


class _Boom(RuntimeError):
  pass


def _boom(*args, **kwargs):
  raise _Boom("failed after the checkpointer was opened")


def test_rl_loop_releases_the_checkpoint_lock_on_error(tmp_path, monkeypatch):
  from w2s_jax.rl import loop as rl_loop

  c = load_config("grpo_tiny", "smoke")
  c.mesh.data, c.data.train_size, c.data.eval_size = 1, 16, 4
  monkeypatch.setattr(rl_loop, "run_sft", lambda config, workdir: (_random_params(config, config.model), {}))
  monkeypatch.setattr(runtime, "MetricsWriter", _boom)
  with pytest.raises(_Boom):
    rl_loop.train_rl(c, tmp_path)
  with Checkpointer(tmp_path / "checkpoints") as again:  # before: "being written by another process"
    assert again.latest_step() is None


def test_distill_loop_releases_the_checkpoint_lock_on_error(tmp_path, monkeypatch):
  from w2s_jax.w2s import onpolicy_distill as od

  c = load_config("onpolicy_distill", "smoke")
  c.mesh.data, c.data.train_size, c.data.eval_size = 1, 16, 4
  monkeypatch.setattr(od, "prepare_role", lambda config, role, workdir: (
    roles.role_model_config(config, role), _random_params(config, config[role].model), {}))
  monkeypatch.setattr(runtime, "MetricsWriter", _boom)
  with pytest.raises(_Boom):
    od.run_onpolicy_distill(c, tmp_path)
  with Checkpointer(tmp_path / "checkpoints") as again:
    assert again.latest_step() is None
