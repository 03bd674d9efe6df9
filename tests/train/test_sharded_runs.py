"""The smoke run on 8 simulated devices under every sharding preset matches the 1-device run."""

import json

import jax
import numpy as np
import pytest

from tests.helpers import load_config
from w2s_jax.main import TASKS
from w2s_jax.train.loop import train

STEPS = 6


def _run(tmp_path, name, *, mesh, sharding="dp", step_form="jit", grad_accum=1):
  c = load_config("sft_tiny", "smoke")
  with c.unlocked():
    c.total_steps = STEPS
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 1000
    c.mesh.update(mesh)
    c.sharding = sharding
    c.step_form = step_form
    c.grad_accum_steps = grad_accum
  workdir = tmp_path / name
  summary = train(c, workdir, TASKS["sft"](c))
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  return np.array([r["loss"] for r in lines]), summary["state"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("ref"), "one", mesh={"data": 1})[0]


@pytest.mark.slow
@pytest.mark.parametrize(
  "name,mesh,sharding,step_form",
  [
    ("dp", {"data": 8}, "dp", "jit"),
    ("fsdp", {"data": 2, "fsdp": 4}, "fsdp", "jit"),
    ("fsdp_tp", {"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tp", "jit"),
    ("shard_map", {"data": 8}, "dp", "shard_map"),
  ],
)
def test_preset_matches_one_device(tmp_path, reference, name, mesh, sharding, step_form):
  losses, state = _run(tmp_path, name, mesh=mesh, sharding=sharding, step_form=step_form)
  assert len(losses) == STEPS and losses[-1] < losses[0]
  np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-5)
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  sharded = {jax.tree_util.keystr(p) for p, x in leaves if not x.sharding.is_fully_replicated}
  if sharding == "dp":
    assert not sharded
  else:
    # every matrix with an `embed` dimension is split; under fsdp_tp the mlp also over `tensor`.
    assert any("embedding" in p for p in sharded), sharded
    assert len(sharded) >= len(leaves) // 2, sharded
  if sharding == "fsdp_tp":
    gate = [x for p, x in leaves if "gate" in jax.tree_util.keystr(p)][0]
    assert gate.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor"), gate.sharding.spec
    assert gate.addressable_shards[0].data.shape == (gate.shape[0] // 2, gate.shape[1] // 2)


@pytest.mark.slow
def test_grad_accumulation_run_matches(tmp_path, reference):
  losses, _ = _run(tmp_path, "accum", mesh={"data": 2}, grad_accum=4)
  np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-5)
