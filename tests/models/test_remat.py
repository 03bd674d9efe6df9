"""`ModelConfig.remat` choices: each gives the no-remat gradient (a different code path: no
`checkpoint` at all) to float32 rounding, and each actually puts a `checkpoint` with its policy in the
program."""

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models import PRESETS, Transformer, from_section
from w2s_jax.models.presets import REMAT_CHOICES

CFG = dataclasses.replace(PRESETS["tiny"], n_layers=2, sliding_window=3, sliding_window_pattern=2)


def _model(remat):
  """The same perturbed parameters (seed 1) under `remat`."""
  model = Transformer(dataclasses.replace(CFG, remat=remat), rngs=nnx.Rngs(0))
  leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                                 for x, k in zip(leaves, keys)]))
  return model


TOKENS = jnp.asarray(np.random.default_rng(0).integers(3, 512, size=(2, 12)), jnp.int32)
SEGMENTS = jnp.asarray([[1] * 7 + [2] * 5, [0] * 3 + [1] * 9], jnp.int32)


def _loss(model):
  logits = model(TOKENS, segment_ids_BL=SEGMENTS)
  logp = jax.nn.log_softmax(logits[:, :-1], -1)
  nll = -jnp.take_along_axis(logp, TOKENS[:, 1:, None], -1)[..., 0]
  return jnp.sum(nll * (SEGMENTS[:, 1:] != 0)) / jnp.sum(SEGMENTS[:, 1:] != 0)


@nnx.jit
def _loss_and_grad(model):
  return nnx.value_and_grad(_loss)(model)


def _checkpoint_eqns(model):
  """The `checkpoint` (remat) equations of the gradient's jaxpr, searched through nested jaxprs."""
  graphdef, params = nnx.split(model)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: _loss(nnx.merge(graphdef, p))))(params)
  found, todo = [], [jaxpr.jaxpr]
  while todo:
    for eqn in todo.pop().eqns:
      if eqn.primitive.name in ("checkpoint", "remat", "remat2"):  # jax 0.10 names it remat2
        found.append(eqn)
      todo.extend(getattr(sub, "jaxpr", sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
  return found


@pytest.mark.parametrize("remat", [c for c in REMAT_CHOICES if c != "none"] + [True])
def test_remat_choice_gives_the_no_remat_gradient(remat):
  l0, g0 = _loss_and_grad(_model("none"))
  l1, g1 = _loss_and_grad(_model(remat))
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
  # Recomputation repeats the same float32 ops; fusion may reorder sums: float32 rounding only.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g0)


@pytest.mark.parametrize("remat, policy", [
  ("none", None), (False, None), ("block", None), (True, None), ("dots_saveable", "dots_saveable"),
  ("dots_with_no_batch_dims_saveable", "dots_with_no_batch_dims_saveable"),
])
def test_remat_is_in_the_program_with_its_policy(remat, policy):
  eqns = _checkpoint_eqns(_model(remat))
  if remat in ("none", False):
    assert eqns == []
    return
  assert len(eqns) == CFG.n_layers  # one per block, in the backward pass's forward recomputation
  for eqn in eqns:
    got = eqn.params.get("policy")
    assert got is (None if policy is None else getattr(jax.checkpoint_policies, policy))


def test_remat_section_shortcut_and_bad_values():
  section = ml_collections.ConfigDict({"preset": "tiny", "vocab_size": 512, "overrides": {}})
  section.remat = "dots_saveable"
  assert from_section(section).remat == "dots_saveable"
  section.remat = "everything"
  with pytest.raises(ValueError, match=r"model.remat = 'everything'"):
    from_section(section)
  with pytest.raises(ValueError, match=r"remat = 'dots'; choose one of"):
    Transformer(dataclasses.replace(CFG, remat="dots"), rngs=nnx.Rngs(0))


def test_block_remat_needs_less_temporary_memory():
  """What remat is for: XLA's buffer assignment for the gradient needs fewer temporary bytes when each
  block keeps only its input (4 layers, 4 x 128 tokens: ~20.8 MB without remat, ~19.8 MB with, on CPU)."""
  cfg = dataclasses.replace(PRESETS["tiny"], n_layers=4)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 512, size=(4, 128)), jnp.int32)

  def temp_bytes(remat):
    graphdef, params = nnx.split(nnx.eval_shape(
      lambda: Transformer(dataclasses.replace(cfg, remat=remat), rngs=nnx.Rngs(0))))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(jax.nn.logsumexp(nnx.merge(graphdef, p)(tokens), -1))))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes("block") < temp_bytes("none")
