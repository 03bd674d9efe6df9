"""LoRA: low-rank adapters on chosen projections of a `Transformer` (Hu et al., 2021, arXiv:2106.09685).

A wrapped projection W [*in, *out] reads as

    W' = W + (alpha / r) * reshape(A [prod(in), r] @ B [r, prod(out)])

with A ~ N(0, 1/prod(in)) and B = 0, so a freshly adapted model equals its base model. A and B are
`LoRAParam`s (a subclass of `nnx.Param`), which is how the train step tells them from the frozen base:

    apply_lora(model, targets=("q", "v"), rank=8, alpha=16, rngs=nnx.Rngs(0))
    graphdef, adapters, frozen = split_lora(model)
    state = create_train_state(adapters, tx, seed, frozen=frozen)   # optimizer state: adapters only
    step = make_train_step(objective, tx, graphdef)                  # the same step as full training
    ...
    merge_lora(model); save_hf(model, "out/")                       # plain weights, W' baked in

In a training run, LoRA is a property of the model: a config's `model.lora` section (`LoRASpec`: targets,
rank, alpha; rank 0 = full fine-tuning) makes the loop runtime (`train/runtime.py`) do the above for SFT,
preference, RL and on-policy distillation.

The wrapper (`LoRAProjection`) answers `proj[...]` with W', so the decoder reads it exactly as it reads
a plain parameter: sampling, heads and export all see the adapted weights with no change to the
decoder. The price of this form is that the backward pass still forms the full-size gradient of W'
(then projects it onto A and B): compute as full fine-tuning, memory as LoRA (optimizer state, and
gradients kept only for A, B). Targets use our names (`q k v o gate up down`) or PEFT's
(`q_proj ... down_proj`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from w2s_jax import sharding as shd
from w2s_jax.models.transformer import Transformer

# target -> (sub-module of a Block, parameter name, number of input axes of the weight)
TARGETS: dict[str, tuple[str, str, int]] = {
  "q": ("attn", "q_DNH", 1),
  "k": ("attn", "k_DKH", 1),
  "v": ("attn", "v_DKH", 1),
  "o": ("attn", "o_NHD", 2),
  "gate": ("mlp", "gate_DF", 1),
  "up": ("mlp", "up_DF", 1),
  "down": ("mlp", "down_FD", 1),
}
_PEFT_NAMES = {
  "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
  "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
}
ALL_TARGETS = tuple(TARGETS)


class LoRAParam(nnx.Param):
  """An adapter factor (A or B); the only parameters a LoRA train step updates."""


class LoRAProjection(nnx.Module):
  """A frozen projection weight plus a low-rank update; `proj[...]` is the adapted weight.

  Attributes:
    base: the original `nnx.Param` [*in, *out] (unchanged, frozen in LoRA training).
    a: `LoRAParam` [*in, r], logical axes of the input dims then None.
    b: `LoRAParam` [r, *out], None then the logical axes of the output dims; zero-initialised.
    scale: alpha / r.
  """

  def __init__(
    self, base: nnx.Param, *, n_in: int, rank: int, alpha: float, rngs: nnx.Rngs,
    dtype: str = "float32",
  ):
    if rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
    shape = tuple(base.shape)
    names = tuple(base.get_metadata().get("out_sharding") or (None,) * len(shape))
    in_shape, out_shape = shape[:n_in], shape[n_in:]
    fan_in = math.prod(in_shape)
    has_mesh = not jax.sharding.get_abstract_mesh().empty
    a = jax.random.normal(rngs.params(), (*in_shape, rank), jnp.dtype(dtype)) * fan_in**-0.5
    b = jnp.zeros((rank, *out_shape), jnp.dtype(dtype))
    self.base = base
    self.a = LoRAParam(a, out_sharding=(*names[:n_in], None), eager_sharding=has_mesh)
    self.b = LoRAParam(b, out_sharding=(None, *names[n_in:]), eager_sharding=has_mesh)
    self.n_in = n_in
    self.rank = rank
    self.scale = float(alpha) / rank

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.base.shape)

  @property
  def dtype(self) -> jnp.dtype:
    return self.base.dtype

  def delta(self) -> jax.Array:
    """scale * A @ B in the base weight's shape and dtype."""
    a, b = self.a[...], self.b[...]
    r = self.rank
    delta = jnp.dot(a.reshape(-1, r), b.reshape(r, -1), preferred_element_type=jnp.float32)
    return (self.scale * delta).reshape(self.shape).astype(self.base.dtype)

  def __getitem__(self, key: Any) -> jax.Array:
    """The adapted weight W + scale * A @ B (indexed by `key`, usually `...`)."""
    return (self.base[...] + self.delta())[key]


def _resolve(targets: Sequence[str]) -> list[str]:
  out = []
  for t in targets:
    name = _PEFT_NAMES.get(t, t)
    if name not in TARGETS:
      raise ValueError(f"unknown LoRA target {t!r}; choose from {ALL_TARGETS} or {tuple(_PEFT_NAMES)}.")
    out.append(name)
  return out


def apply_lora(
  model: Transformer,
  *,
  targets: Sequence[str] = ALL_TARGETS,
  rank: int = 8,
  alpha: float = 16.0,
  rngs: nnx.Rngs,
  layers: Sequence[int] | None = None,
  dtype: str = "float32",
  mesh: Mesh | None = None,
  rules: shd.Rules | str | None = None,
) -> Transformer:
  """Wraps the chosen projections of `model` with zero-initialised LoRA adapters, in place.

  Args:
    model: the decoder (its weights become the frozen base).
    targets: projections to adapt: `q k v o gate up down` (or `q_proj` ... `down_proj`).
    rank: r.
    alpha: the update is scaled by alpha / r.
    rngs: source of A's random init (B is zero).
    layers: indices of the blocks to adapt; None = all.
    dtype: dtype of A and B.
    mesh: place A and B on this mesh by their logical axes under `rules` (as `convert.load_hf` does
      for the base); None = leave them where they are created.
    rules: logical-axis rules (preset name or table) for `mesh`; default "fsdp_tp".

  Returns:
    `model`, now holding `LoRAProjection`s.

  Raises:
    ValueError: for an unknown target, or a projection that is already adapted.
  """
  names = _resolve(targets)
  layer_ids = range(len(model.blocks)) if layers is None else layers
  for i in layer_ids:
    block = model.blocks[i]
    for name in names:
      sub, attr, n_in = TARGETS[name]
      parent = getattr(block, sub)
      base = getattr(parent, attr)
      if isinstance(base, LoRAProjection):
        raise ValueError(f"blocks[{i}].{sub}.{attr} already has a LoRA adapter.")
      proj = LoRAProjection(base, n_in=n_in, rank=rank, alpha=alpha, rngs=rngs, dtype=dtype)
      if mesh is not None:
        table = shd.get_rules(rules or "fsdp_tp") if isinstance(rules, str | None) else rules
        for p in (proj.a, proj.b):
          p.set_value(jax.device_put(p[...], shd.param_sharding(p, mesh, table)))
      setattr(parent, attr, proj)
  return model


def lora_projections(model: Transformer) -> list[tuple[str, LoRAProjection]]:
  """(path, projection) of every LoRA-wrapped weight in `model`."""
  out = []
  for i, block in enumerate(model.blocks):
    for sub, attr, _ in TARGETS.values():
      proj = getattr(getattr(block, sub), attr)
      if isinstance(proj, LoRAProjection):
        out.append((f"blocks.{i}.{sub}.{attr}", proj))
  return out


def merge_lora(model: Transformer) -> Transformer:
  """Replaces every `LoRAProjection` by a plain `nnx.Param` holding W + scale * A @ B, in place.

  The merged model computes exactly what the adapted one did (the same weight is formed either way),
  and exports with `convert.save_hf` like any base model.
  """
  for block in model.blocks:
    for sub, attr, _ in TARGETS.values():
      parent = getattr(block, sub)
      proj = getattr(parent, attr)
      if isinstance(proj, LoRAProjection):
        setattr(parent, attr, proj.base.replace(proj[...]))
  return model


def split_lora(model: Transformer) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, adapter params, everything else) — the trainable/frozen split of LoRA training."""
  return nnx.split(model, LoRAParam, ...)


# What a LoRA run trains: the adapters, plus the fresh head (an attribute `head`) of a backbone + head model.
TRAINABLE = nnx.Any(LoRAParam, nnx.All(nnx.Param, nnx.PathContains("head")))


def decoder_of(model: nnx.Module) -> Transformer:
  """The decoder LoRA adapts: `model` itself, or its `backbone` (`SequenceClassifier`, `ValueModel`).

  Raises:
    ValueError: for a model with no single decoder (e.g. an actor-critic's policy and critic).
  """
  if isinstance(model, Transformer):
    return model
  backbone = getattr(model, "backbone", None)
  if isinstance(backbone, Transformer):
    return backbone
  raise ValueError(f"LoRA adapts a Transformer or a model with a Transformer `backbone`, not a "
                   f"{type(model).__name__}")


@dataclasses.dataclass(frozen=True)
class LoRASpec:
  """What a config's `model.lora` section asks for: adapters of `rank` on `targets`, scaled by alpha / rank.

  Attributes:
    targets: projection names (`q k v o gate up down` or PEFT's `q_proj` ...).
    rank: r (>= 1; a section with rank 0 means full fine-tuning and gives no spec).
    alpha: the update's scale is alpha / r.
  """

  targets: tuple[str, ...]
  rank: int
  alpha: float

  @classmethod
  def from_section(cls, section: Mapping[str, Any] | None, where: str = "model.lora") -> LoRASpec | None:
    """The spec of a `{targets, rank, alpha}` section; None when it is absent or its rank is 0.

    `targets` is a sequence or a comma-separated string (`"q,v"`, as typed on the command line).

    Raises:
      ValueError: naming `where`, for a negative rank, no targets or an unknown target.
    """
    if not section:
      return None
    rank = int(section.get("rank", 0) or 0)
    if rank == 0:
      return None
    if rank < 0:
      raise ValueError(f"{where}.rank = {rank}: use a rank >= 1, or 0 for full fine-tuning")
    targets = section.get("targets", ("q", "v"))
    if isinstance(targets, str):
      targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = tuple(targets)
    if not targets:
      raise ValueError(f"{where}.targets is empty; name projections from {ALL_TARGETS}")
    try:
      _resolve(targets)
    except ValueError as e:
      raise ValueError(f"{where}.targets: {e}") from None
    return cls(targets, rank, float(section.get("alpha", 2.0 * rank)))

  def apply(self, model: nnx.Module, *, seed: int) -> nnx.Module:
    """`apply_lora` of this spec on `model`'s decoder (`decoder_of`; A drawn from `nnx.Rngs(seed)`), in
    place; returns `model`."""
    apply_lora(decoder_of(model), targets=self.targets, rank=self.rank, alpha=self.alpha,
               rngs=nnx.Rngs(seed))
    return model


def state_bytes(tree: Any) -> int:
  """Bytes held by the arrays (or shape structs) of a pytree, e.g. an optimizer state."""
  leaves = jax.tree.leaves(tree)
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves if hasattr(x, "shape"))
