"""LoRA adapters: identity at init, adapter-only training through the shared train step, exact merge."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from w2s_jax import sharding as shd
from w2s_jax.models import convert, get_preset, lora
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import step as step_lib
from w2s_jax.train.objectives import sft_objective
from w2s_jax.train.state import create_train_state

B, L = 4, 16


def _model(seed: int = 0) -> Transformer:
  return Transformer(get_preset("tiny", vocab_size=128), rngs=nnx.Rngs(seed))


def _batch() -> dict[str, jax.Array]:
  tokens = np.random.default_rng(0).integers(0, 128, size=(B, L + 1))
  mask = np.ones((B, L), np.float32)
  mask[1, 10:] = 0
  return {
    "inputs": jnp.asarray(tokens[:, :-1]),
    "targets": jnp.asarray(tokens[:, 1:]),
    "loss_mask": jnp.asarray(mask),
    "positions": jnp.broadcast_to(jnp.arange(L), (B, L)),
    "segment_ids": jnp.asarray(mask, jnp.int32),
  }


@nnx.jit
def _forward(model: Transformer, tokens_BL: jax.Array, segment_ids_BL: jax.Array) -> jax.Array:
  return model(tokens_BL, segment_ids_BL=segment_ids_BL)


def _logits(model: Transformer) -> np.ndarray:
  batch = _batch()
  return np.asarray(_forward(model, batch["inputs"], batch["segment_ids"]))


def test_zero_initialised_adapters_equal_base_model():
  model = _model()
  base = _logits(model)
  lora.apply_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
  assert len(lora.lora_projections(model)) == 2 * 7
  np.testing.assert_array_equal(_logits(model), base)
  proj = model.blocks[0].attn.o_NHD  # two input axes: A [N, H, r], B [r, D]
  assert proj.a.shape == (4, 16, 4) and proj.b.shape == (4, 64) and proj.scale == 2.0


def test_targets_by_name_and_layers():
  model = lora.apply_lora(_model(), targets=("q_proj", "v"), layers=[1], rank=2, rngs=nnx.Rngs(1))
  paths = [p for p, _ in lora.lora_projections(model)]
  assert paths == ["blocks.1.attn.q_DNH", "blocks.1.attn.v_DKH"]
  with pytest.raises(ValueError, match="unknown LoRA target"):
    lora.apply_lora(_model(), targets=("qkv",), rngs=nnx.Rngs(1))
  with pytest.raises(ValueError, match="already has a LoRA adapter"):
    lora.apply_lora(model, targets=("q",), layers=[1], rngs=nnx.Rngs(1))


def _lora_state(model: Transformer, tx):
  graphdef, adapters, frozen = lora.split_lora(model)
  return graphdef, create_train_state(adapters, tx, seed=0, frozen=frozen)


def test_lora_step_trains_only_adapters():
  model = lora.apply_lora(_model(), rank=4, alpha=8.0, rngs=nnx.Rngs(1))
  tx = optax.adam(1e-2)
  graphdef, state = _lora_state(model, tx)
  n_adapter = len(jax.tree.leaves(state.params))
  assert n_adapter == 2 * 7 * 2
  assert all(isinstance(v, lora.LoRAParam) for v in jax.tree.leaves(state.params, is_leaf=_is_var))
  # Adam's moments exist for the adapters only.
  assert lora.state_bytes(state.opt_state) == 2 * lora.state_bytes(state.params) + 4  # + count

  step = jax.jit(step_lib.make_train_step(sft_objective(), tx, graphdef))
  losses = []
  new = state
  for _ in range(3):
    new, metrics = step(new, _batch())
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  for old, cur in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(new.frozen)):
    np.testing.assert_array_equal(old, cur)  # the base is untouched
  for old, cur in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
    assert not np.array_equal(old, cur)  # every A and B moved (A from step 2, once B != 0)

  # The frozen base is an argument of the compiled step, not a baked-in constant.
  scaled = new.replace(frozen=jax.tree.map(lambda x: 0.5 * x, new.frozen))
  _, m1 = step(new, _batch())
  _, m2 = step(scaled, _batch())
  assert float(m1["loss"]) != float(m2["loss"]) and step._cache_size() == 1


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def test_merge_then_export_equals_adapted_model(tmp_path):
  model = lora.apply_lora(_model(), targets=("q", "k", "o", "up", "down"), rank=4, rngs=nnx.Rngs(1))
  for _, proj in lora.lora_projections(model):  # a trained-looking adapter
    proj.b.set_value(0.1 * jax.random.normal(jax.random.key(3), proj.b.shape))
  adapted = _logits(model)
  assert np.abs(adapted - _logits(_model())).max() > 1e-2  # the adapter matters

  convert.save_hf(model, tmp_path / "unmerged")  # export merges on the fly
  lora.merge_lora(model)
  assert not lora.lora_projections(model)
  assert type(model.blocks[0].attn.q_DNH) is nnx.Param
  np.testing.assert_array_equal(_logits(model), adapted)

  convert.save_hf(model, tmp_path / "merged")
  for folder in ("merged", "unmerged"):
    loaded, _ = convert.load_hf(tmp_path / folder)
    np.testing.assert_allclose(_logits(loaded), adapted, atol=1e-6, rtol=0)


def test_sharded_lora_step_matches_single_device():
  mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
  rules = shd.get_rules("fsdp_tp")
  tx = optax.adamw(1e-2)

  def run(sharded: bool):
    model = lora.apply_lora(
      _model(), targets=("o", "gate"), rank=4, rngs=nnx.Rngs(1), mesh=mesh if sharded else None
    )
    if sharded:  # adapters placed by their logical axes, as on a base loaded with load_hf(mesh=...)
      assert model.blocks[0].attn.o_NHD.b[...].sharding.spec == PartitionSpec(None, "fsdp")
    graphdef, state = _lora_state(model, tx)
    step = step_lib.make_train_step(sft_objective(), tx, graphdef)
    if sharded:
      shardings = shd.tree_shardings(state, mesh, rules)
      state = jax.device_put(state, shardings)
      step = step_lib.jit_train_step(step, shardings, mesh)
      batch = shd.put_batch({k: np.asarray(v) for k, v in _batch().items()}, mesh)
    else:
      step, batch = jax.jit(step), _batch()
    for _ in range(2):
      state, metrics = step(state, batch)
    return state, metrics

  sharded, m_sharded = run(True)
  single, m_single = run(False)
  a = sharded.params["blocks"][0]["mlp"]["gate_DF"]["a"][...]
  assert a.sharding.spec == PartitionSpec("fsdp", None)
  b = sharded.frozen["blocks"][0]["mlp"]["gate_DF"]["base"][...]
  assert b.sharding.spec == PartitionSpec("fsdp", "tensor")
  np.testing.assert_allclose(float(m_sharded["loss"]), float(m_single["loss"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_optimizer_memory_saved_on_smollm2_135m():
  """AdamW state of SmolLM2-135M: full fine-tuning vs LoRA r=8 on all seven projections (shapes only)."""
  cfg = get_preset("smollm2-135m")
  tx = optax.adamw(1e-4)
  full = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  full_bytes = lora.state_bytes(jax.eval_shape(tx.init, nnx.state(full, nnx.Param)))
  adapted = nnx.eval_shape(
    lambda: lora.apply_lora(Transformer(cfg, rngs=nnx.Rngs(0)), rank=8, rngs=nnx.Rngs(1))
  )
  _, adapters, _ = lora.split_lora(adapted)
  lora_bytes = lora.state_bytes(jax.eval_shape(tx.init, adapters))
  n_adapter = sum(x.size for x in jax.tree.leaves(adapters))
  # per layer r * (q: D + NH, k, v: D + KH each, o: NH + D, gate, up, down: D + F each)
  assert n_adapter == 30 * 8 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536)) == 2_442_240
  assert full_bytes > 1.0e9 and lora_bytes < 0.02 * full_bytes  # 1.08 GB -> 19.5 MB


def test_sampling_with_unmerged_adapters_equals_the_merged_model():
  from w2s_jax.sampling.sampler import Sampler, SamplingConfig

  model = lora.apply_lora(_model(), targets=("q", "v", "up"), rank=4, rngs=nnx.Rngs(1))
  for _, proj in lora.lora_projections(model):  # a trained-looking adapter (B = 0 would be the base)
    proj.b.set_value(0.1 * jax.random.normal(jax.random.key(3), proj.b.shape))
  cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, pad_id=0)
  prompts_BP = np.random.default_rng(1).integers(1, 128, size=(3, 5)).astype(np.int32)
  mask_BP = np.ones_like(prompts_BP, bool)
  mask_BP[0, :2] = False  # left padding
  graphdef, state = nnx.split(model)  # the sampler reads W' through the wrappers: no merge
  adapted = Sampler(graphdef, cfg)(state, prompts_BP, mask_BP, jax.random.key(7))
  base = Sampler(_model(), cfg)(nnx.split(_model())[1], prompts_BP, mask_BP, jax.random.key(7))
  merged_model = lora.merge_lora(model)
  merged = Sampler(merged_model, cfg)(nnx.split(merged_model)[1], prompts_BP, mask_BP, jax.random.key(7))
  np.testing.assert_array_equal(adapted.tokens_BS, merged.tokens_BS)
  np.testing.assert_array_equal(adapted.logprobs_BS, merged.logprobs_BS)
  assert not np.array_equal(adapted.logprobs_BS, base.logprobs_BS)  # the adapters did change the model


def test_lora_spec_from_a_config_section():
  assert lora.LoRASpec.from_section(None) is None
  assert lora.LoRASpec.from_section({"rank": 0, "alpha": 16.0, "targets": "q,v"}) is None  # full fine-tune
  spec = lora.LoRASpec.from_section({"rank": 4, "alpha": 8.0, "targets": "q, v_proj,down"})
  assert spec == lora.LoRASpec(("q", "v_proj", "down"), 4, 8.0)
  with pytest.raises(ValueError, match=r"model.lora.targets: unknown LoRA target 'qkv'"):
    lora.LoRASpec.from_section({"rank": 4, "targets": "q,qkv"})
  with pytest.raises(ValueError, match=r"model.lora.rank = -1"):
    lora.LoRASpec.from_section({"rank": -1})
  with pytest.raises(ValueError, match="not a Linear"):
    lora.decoder_of(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
