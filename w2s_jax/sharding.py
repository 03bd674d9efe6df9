"""Device meshes, logical-axis rules and placement of train states and batches.

Every parameter is created with logical axis names (`vocab, embed, mlp, heads, kv_heads, head_dim`); one
rules table per preset maps them onto at most three mesh axes (`data, fsdp, tensor`). The config picks a
preset by name:

| preset    | batch            | params                                                   |
|-----------|------------------|----------------------------------------------------------|
| `dp`      | (data, fsdp)     | replicated                                               |
| `fsdp`    | (data, fsdp)     | `embed` dimension sharded over `fsdp`                    |
| `fsdp_tp` | (data, fsdp)     | `embed` over `fsdp`; `mlp, heads, kv_heads, vocab` over `tensor` |

Meshes are built with `AxisType.Auto` (`jax.make_mesh` defaults to Explicit axes, under which logical
rules raise `ShardingTypeError`). Library functions take the mesh as an argument; only entry points set
it globally.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = tuple[tuple[str, Any], ...]

LOGICAL_AXES = ("batch", "length", "vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "norm")


def _rules(**mapping: Any) -> Rules:
  # Every logical name gets a rule (None = replicated): flax passes unknown names through as mesh
  # axes, which fails on a mesh that has no such axis.
  unknown = set(mapping) - set(LOGICAL_AXES)
  assert not unknown, unknown
  return tuple((name, mapping.get(name)) for name in LOGICAL_AXES)


RULES: dict[str, Rules] = {
  "dp": _rules(batch=BATCH_AXES),
  "fsdp": _rules(batch=BATCH_AXES, embed="fsdp"),
  "fsdp_tp": _rules(
    batch=BATCH_AXES, embed="fsdp", mlp="tensor", heads="tensor", kv_heads="tensor", vocab="tensor"
  ),
}


def get_rules(name: str) -> Rules:
  """Returns the logical-axis rules of preset `name` (`dp`, `fsdp` or `fsdp_tp`)."""
  if name not in RULES:
    raise ValueError(f"unknown sharding preset {name!r}; choose one of {sorted(RULES)}")
  return RULES[name]


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh with Auto axes.

  Args:
    shape: sizes per axis name; a missing axis is 1 and one axis may be -1 (all remaining devices);
      without -1, a mesh smaller than the device count takes the first devices.
    devices: devices to use (default: all global devices).

  Returns:
    A `Mesh` whose axes are `MESH_AXES`.
  """
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; mesh axes are {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(shape)}")
    sizes[sizes.index(-1)] = len(devices) // known
  if -1 not in [int(shape.get(a, 1)) for a in MESH_AXES] and math.prod(sizes) < len(devices):
    devices = devices[: math.prod(sizes)]  # a fully specified smaller mesh uses the first devices
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}"
    )
  return jax.make_mesh(
    tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch array: leading (batch) dimension over data and fsdp, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def fit_spec(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, *, where: str = "") -> PartitionSpec:
  """`spec` with every dimension its mesh axes do not divide replicated (a warning names it).

  A dimension of 3 KV heads cannot be split over a tensor axis of 2: that dimension is replicated
  instead of the placement failing.
  """
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[a] for a in names)
    if dim % size:
      warnings.warn(f"dimension {dim} of a {tuple(shape)} array{where} does not divide over mesh axes "
                    f"{names} (size {size}): replicated.", stacklevel=3)
      axes = None
    fitted.append(axes)
  return PartitionSpec(*fitted)


def param_sharding(param: nnx.Variable, mesh: Mesh, rules: Rules) -> NamedSharding:
  """The NamedSharding of one Variable under `rules` (non-dividing dimensions replicated, `fit_spec`)."""
  with nnx.logical_axis_rules(rules):
    spec = nnx.get_partition_spec(nnx.State({"p": param}))["p"]
  spec = spec.get_value() if isinstance(spec, nnx.Variable) else spec
  return NamedSharding(mesh, fit_spec(param.shape, spec, mesh))


def tree_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings of any pytree holding `nnx.Variable`s (params, optimizer moments, a TrainState).

  Variables are placed by their logical axis names under `rules`; optax keeps the Variables (and their
  names) in its moment trees, so Adam's `mu`/`nu` land exactly like their params. Plain arrays (step
  counters, keys) are replicated. A dimension its mesh axes do not divide is replicated (`fit_spec`).
  """
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(abstract_tree)
  return jax.tree.map(lambda p, a: NamedSharding(mesh, fit_spec(np.shape(a), p, mesh)), specs, abstract_tree)


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch (the same global numpy batch on every process) onto the mesh.

  Each process hands over only the shards its own devices hold, so this works unchanged across hosts.
  """
  sharding = batch_sharding(mesh)

  def place(x: np.ndarray) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return {k: place(v) for k, v in batch.items()}


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, batch_size: int | None = None
                 ) -> dict[str, jax.Array]:
  """One global batch of B = `batch_size` rows, sharded as `batch_sharding(mesh)`, from this process's part.

  Args:
    local: field -> [R, ...]: this process's rows of the batch (`data.pipeline.process_rows`: the block its
      devices hold, R = B / process count under the batch-sharded presets), or the whole batch (R = B, the
      same on every process, as `put_batch` takes it).
    mesh: the mesh.
    batch_size: B; None = R (a whole batch).

  Returns:
    field -> a global [B, ...] `jax.Array` (`jax.make_array_from_process_local_data`); on one process, the
    array `put_batch` places.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(
            sharding, np.asarray(v), (batch_size or len(v), *np.shape(v)[1:]))
          for k, v in local.items()}


def describe(tree: Any) -> dict[str, str]:
  """Maps each array leaf's path to its sharding spec (for logging and tests)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): str(getattr(x, "sharding", None)) for p, x in flat}
