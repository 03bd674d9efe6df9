"""Preference objectives: on the tiny preset model, DPO at policy == reference and one step raising the
margin, and the reward model's heads; on a toy bigram model (cheap to compile), every pairwise loss wired
to the right inputs, gradient accumulation over pair batches and KTO's KL rows."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from w2s_jax.losses import preference as pref
from w2s_jax.models.heads import SequenceClassifier, ValueModel
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import preference_objectives as po
from w2s_jax.train import step as step_lib
from w2s_jax.train.state import create_train_state

B, L, PROMPT, V = 4, 16, 5, 512
CFG = get_preset("tiny", max_seq_len=32)
RM_CFG = get_preset("tiny", max_seq_len=32, n_layers=1)  # the heads' tests only need a backbone


def _rows(rng, prompts, lengths):
  """Token rows [N, L] of prompt + completion (length per row) + padding, in the objectives' layout."""
  n = len(prompts)
  tokens = np.zeros((n, L + 1), np.int32)
  loss_mask = np.zeros((n, L), np.float32)
  segment_ids = np.zeros((n, L), np.int32)
  for i, (prompt, length) in enumerate(zip(prompts, lengths, strict=True)):
    row = np.concatenate([prompt, rng.integers(1, V, length)])
    tokens[i, : len(row)] = row
    loss_mask[i, PROMPT - 1 : len(row) - 1] = 1.0  # targets that are completion tokens
    segment_ids[i, : len(row) - 1] = 1
  positions = np.broadcast_to(np.arange(L, dtype=np.int32), (n, L)).copy()
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": loss_mask,
          "positions": positions, "segment_ids": segment_ids}


def _pair_batch(seed, pad_pairs=0):
  """[2B, L]: B chosen rows then the B rejected rows of the same prompts; the last `pad_pairs` pairs
  are all padding."""
  rng = np.random.default_rng(seed)
  prompts = rng.integers(1, V, (B, PROMPT))
  chosen = _rows(rng, prompts, rng.integers(3, L - PROMPT + 1, B))
  rejected = _rows(rng, prompts, rng.integers(3, L - PROMPT + 1, B))
  batch = {k: np.concatenate([chosen[k], rejected[k]]) for k in chosen}
  for i in range(B - pad_pairs, B):
    for j in (i, B + i):
      batch["loss_mask"][j] = 0
      batch["segment_ids"][j] = 0
  return batch


class Bigram(nnx.Module):
  """A toy language model: next-token logits from the current token alone."""

  def __init__(self, rngs: nnx.Rngs):
    self.table_VV = nnx.Param(jax.random.normal(rngs.params(), (V, V)))

  def __call__(self, tokens_BL, *, positions_BL=None, segment_ids_BL=None):
    del positions_BL, segment_ids_BL
    return self.table_VV[...][tokens_BL]


@pytest.fixture(scope="module")
def lm():
  """The tiny preset decoder split into (graphdef, params), and its jitted `reference_logps`."""
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
  ref_fn = jax.jit(lambda p, b: po.reference_logps(nnx.merge(graphdef, p), b))
  return graphdef, params, ref_fn


@pytest.fixture(scope="module")
def toy():
  return nnx.split(Bigram(nnx.Rngs(0)))


def _np_logps(logits, targets, mask):
  logits = np.asarray(logits, np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  gathered = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return (gathered * mask).sum(-1), mask.sum(-1)


def test_sequence_logps_equals_numpy_log_softmax_gather():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 3.0, (3, 7, 11)).astype(np.float32)
  targets = rng.integers(0, 11, (3, 7)).astype(np.int32)
  mask = (rng.uniform(size=(3, 7)) < 0.6).astype(np.float32)
  mask[2] = 0.0  # an empty row sums to 0 over 0 tokens
  logps, count = jax.jit(po.sequence_logps)(logits, targets, mask)
  want_logps, want_count = _np_logps(logits, targets, mask)
  np.testing.assert_allclose(logps, want_logps, rtol=1e-6, atol=1e-5)
  np.testing.assert_array_equal(count, want_count)
  assert logps[2] == 0.0


def test_dpo_at_reference_is_log2_and_a_step_raises_the_margin(lm):
  graphdef, params, ref_fn = lm
  batch = _pair_batch(1, pad_pairs=1)
  batch["ref_logps"] = ref_fn(params, batch)
  tx = optax.sgd(0.5)
  step = jax.jit(step_lib.make_train_step(po.preference_objective("dpo", beta=0.1), tx, graphdef))
  state, m0 = step(create_train_state(params, tx, 0), batch)
  # policy == reference: each real pair has h = 0, loss log 2 and no margin; the padding pair no weight
  assert float(m0["loss"]) == pytest.approx(np.log(2.0), abs=1e-6)
  assert float(m0["weight"]) == B - 1
  assert abs(float(m0["rewards/margins"])) < 1e-6 and float(m0["rewards/accuracies"]) == 0.0
  _, m1 = step(state, batch)  # metrics of the second step are those of the updated policy
  assert float(m1["rewards/margins"]) > 1e-3 and float(m1["loss"]) < np.log(2.0) - 1e-4
  assert float(m1["rewards/accuracies"]) > 0.0
  # and the margin rose on the updated parameters, measured directly
  new = ref_fn(state.params, batch)
  h = (new[:B] - batch["ref_logps"][:B]) - (new[B:] - batch["ref_logps"][B:])
  assert np.mean(h[: B - 1]) > 0.0


def test_pairwise_objectives_feed_each_loss_the_inputs_it_needs(toy):
  """Every pairwise objective equals its loss applied to sequence log-probs computed by hand."""
  graphdef, params = toy
  batch = _pair_batch(2)
  rng = np.random.default_rng(2)
  batch["ref_logps"] = (-rng.uniform(20.0, 60.0, 2 * B)).astype(np.float32)  # a reference unlike the policy
  settings = {"dpo": {"beta": 0.2}, "robust": {"label_smoothing": 0.1}, "hinge": {"beta": 0.01},
              "ipo": {"beta": 0.5}, "rpo": {"rpo_alpha": 0.5}, "simpo": {"beta": 2.0, "gamma": 0.5},
              "orpo": {"beta": 0.1}}

  def run(p, b):
    model = nnx.merge(graphdef, p)
    logits = model(b["inputs"], positions_BL=b["positions"], segment_ids_BL=b["segment_ids"])
    outs = {k: po.PREFERENCE_OBJECTIVES[k](**kw)(model, b, jax.random.key(0)) for k, kw in settings.items()}
    return outs, logits

  outs, logits = jax.jit(run)(params, batch)
  logps, count = _np_logps(logits, batch["targets"], batch["loss_mask"])
  pc, pr, nc, nr = logps[:B], logps[B:], count[:B], count[B:]
  rc, rr = batch["ref_logps"][:B], batch["ref_logps"][B:]
  want = {
    "dpo": pref.dpo_loss(pc, pr, rc, rr, beta=0.2),
    "robust": pref.dpo_loss(pc, pr, rc, rr, label_smoothing=0.1, loss_type="robust"),
    "hinge": pref.hinge_loss(pc, pr, rc, rr, beta=0.01),
    "ipo": pref.ipo_loss(pc, pr, rc, rr, beta=0.5, chosen_lengths_B=nc, rejected_lengths_B=nr),
    "rpo": pref.rpo_loss(pc, pr, rc, rr, -pc / nc, rpo_alpha=0.5),
    "simpo": pref.simpo_loss(pc / nc, pr / nr, beta=2.0, gamma=0.5),
    "orpo": pref.orpo_loss(pc / nc, pr / nr, beta=0.1),
  }
  for name, (loss_B, metrics) in want.items():
    loss_sum, weight, sums = outs[name]
    assert float(weight) == B, name
    assert float(loss_sum) / B == pytest.approx(float(np.mean(loss_B)), rel=1e-5, abs=1e-6), name
    assert float(sums["rewards/margins"]) / B == pytest.approx(
      float(np.mean(metrics["rewards/margins"])), rel=1e-4, abs=1e-6), name
    assert float(sums["logps/chosen"]) / B == pytest.approx(float(np.mean(pc)), rel=1e-5), name


def test_registry_and_unknown_or_unpaired_losses_are_pointed_elsewhere():
  assert set(po.PREFERENCE_OBJECTIVES) >= {"dpo", "sigmoid", "robust", "ipo", "hinge", "rpo", "simpo", "orpo",
                                           "kto", "reward_model"}
  with pytest.raises(ValueError, match="kto_objective"):
    po.preference_objective("kto")
  with pytest.raises(ValueError, match="reward_model_objective"):
    po.preference_objective("bradley_terry")
  with pytest.raises(ValueError, match="choose one of"):
    po.preference_objective("exo_pair")
  with pytest.raises(TypeError, match="'simpo'.*gama"):
    po.preference_objective("simpo", gama=0.5)


def test_grad_accumulation_keeps_the_pair_layout(toy):
  """Two micro-batches (rows j, j+2, ...) hold whole pairs, so the update equals the full batch's."""
  graphdef, params = toy
  batch = _pair_batch(3)
  batch["ref_logps"] = (-np.random.default_rng(3).uniform(20.0, 60.0, 2 * B)).astype(np.float32)
  tx = optax.sgd(1.0)
  objective = po.preference_objective("dpo", beta=0.1)
  full = jax.jit(step_lib.make_train_step(objective, tx, graphdef))
  acc = jax.jit(step_lib.make_train_step(objective, tx, graphdef, grad_accum_steps=2))
  s_full, m_full = full(create_train_state(params, tx, 0), batch)
  s_acc, m_acc = acc(create_train_state(params, tx, 0), batch)
  np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
  np.testing.assert_allclose(m_acc["rewards/accuracies"], m_full["rewards/accuracies"])
  for a, b in zip(jax.tree.leaves(s_acc.params), jax.tree.leaves(s_full.params), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_kto_objective_with_kl_rows(toy):
  graphdef, params = toy
  rng = np.random.default_rng(4)
  batch = _pair_batch(4)
  kl = _pair_batch(5)
  batch.update({f"kl_{k}": v[:B] for k, v in kl.items()})
  batch["ref_logps"] = (-rng.uniform(20.0, 60.0, 2 * B)).astype(np.float32)
  batch["ref_kl_logps"] = (-rng.uniform(40.0, 80.0, B)).astype(np.float32)  # KL estimate > 0
  batch["desirable"] = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)

  def run(p, b):
    model = nnx.merge(graphdef, p)
    logits = model(b["inputs"], positions_BL=b["positions"], segment_ids_BL=b["segment_ids"])
    kl_logits = model(b["kl_inputs"], positions_BL=b["kl_positions"], segment_ids_BL=b["kl_segment_ids"])
    return po.kto_objective(beta=0.1, desirable_weight=1.2)(model, b, jax.random.key(0)), logits, kl_logits

  (loss_sum, weight, sums), logits, kl_logits = jax.jit(run)(params, batch)
  logps, _ = _np_logps(logits, batch["targets"], batch["loss_mask"])
  kl_logps, _ = _np_logps(kl_logits, batch["kl_targets"], batch["kl_loss_mask"])
  z0 = max(0.0, float(np.mean(kl_logps - batch["ref_kl_logps"])))
  assert z0 > 0
  want, _ = pref.kto_loss(logps, batch["ref_logps"], batch["desirable"], z0, beta=0.1, desirable_weight=1.2)
  assert float(weight) == 2 * B
  assert float(loss_sum) / (2 * B) == pytest.approx(float(np.mean(want)), rel=1e-5)
  assert float(sums["kl"]) / (2 * B) == pytest.approx(z0, rel=1e-4)
  assert float(sums["count/chosen"]) == 4.0


def test_reward_model_objective_classifier_and_value_head():
  batch = _pair_batch(6, pad_pairs=1)
  batch["margin"] = np.float32([0.0, 0.5, 1.0, 0.0])
  clf = SequenceClassifier(RM_CFG, 1, zero_init=False, rngs=nnx.Rngs(1))
  val = ValueModel(RM_CFG, zero_init=False, rngs=nnx.Rngs(2))
  objective = po.reward_model_objective(center_rewards_coefficient=0.01)

  def run(model, b):
    return objective(model, b, jax.random.key(0)), po.sequence_scores(model, b), model(
      b["inputs"], positions_BL=b["positions"], segment_ids_BL=b["segment_ids"])

  for model in (clf, val):
    (loss_sum, weight, sums), scores, out = nnx.jit(run)(model, batch)
    last = np.maximum(batch["segment_ids"].sum(-1) - 1, 0)  # right-padded rows: the last real token
    if isinstance(model, ValueModel):
      np.testing.assert_allclose(scores, out[np.arange(2 * B), last], rtol=1e-6)
    else:
      np.testing.assert_allclose(scores, out[:, 0])
    real = slice(0, B - 1)  # the last pair is padding
    want, m = pref.bradley_terry_loss(scores[:B][real], scores[B:][real], margin_B=batch["margin"][real],
                                      center_rewards_coefficient=0.01)
    assert float(weight) == B - 1
    assert float(loss_sum) == pytest.approx(float(np.sum(want)), rel=1e-5)
    assert float(sums["accuracy"]) == float(np.sum(m["accuracy"]))


def test_reward_model_training_raises_pairwise_accuracy():
  """A few steps of the zero-initialised classifier on a fixed batch: pairwise accuracy 0 -> 1."""
  batch = _pair_batch(7)
  model = SequenceClassifier(RM_CFG, 1, rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model)
  tx = optax.adam(1e-2)
  step = jax.jit(step_lib.make_train_step(po.reward_model_objective(), tx, graphdef))
  state = create_train_state(params, tx, 0)
  state, m0 = step(state, batch)
  assert float(m0["loss"]) == pytest.approx(np.log(2.0), abs=1e-6) and float(m0["accuracy"]) == 0.0
  for _ in range(5):
    state, m = step(state, batch)
  assert float(m["accuracy"]) == 1.0 and float(m["loss"]) < float(m0["loss"])
