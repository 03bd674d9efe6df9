"""The RL objective against hand-derived NumPy losses and gradients on a tiny model.

The reference log-probs come from `w2s_jax.sampling.score_fn` (an independent forward over the whole
sequence), so the test also checks the objective's slot alignment. The reference gradient is the chain
rule: ∂L/∂θ = Σ_{r,n} (∂L/∂logp_{r,n}) · ∂logp_{r,n}/∂θ, with ∂L/∂logp written out by hand in NumPy and
∂logp/∂θ from a VJP of `score_fn`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.objective import ActorCritic, rl_objective
from w2s_jax.sampling.score import score_fn

P, N, R = 4, 5, 4  # prompt slots, completion slots, rows
CFG = get_preset("tiny", vocab_size=32, n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)


def _batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, 32, size=(R, P + N)).astype(np.int32)
  mask = np.ones((R, P + N), np.int32)
  mask[0, :2] = 0  # left padding
  mask[2, :1] = 0
  completion = np.ones((R, N), np.float32)
  completion[1, 3:] = 0  # short completions (right padding)
  completion[3, 1:] = 0
  mask[1, P + 3 :] = 0
  mask[3, P + 1 :] = 0
  tokens = np.where(mask > 0, tokens, 0)
  return {
    "tokens": tokens, "mask": mask, "completion_mask": completion,
    "advantages": (rng.normal(size=(R, 1)) * np.ones((1, N))).astype(np.float32) * completion,
  }


@functools.partial(jax.jit, static_argnums=0)
def _score_logp_jit(graphdef, params, tokens, mask):
  lp_RS, _ = score_fn(nnx.merge(graphdef, params), tokens, mask)
  return lp_RS[:, P:]


def _score_logp(graphdef, params, batch):
  return _score_logp_jit(graphdef, params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["mask"]))


def _reference_grad(graphdef, params, batch, dL_dlogp_RN):
  @jax.jit
  def f(p, b, cotangent):
    _, vjp = jax.vjp(lambda q: _score_logp(graphdef, q, b), p)
    return vjp(cotangent)[0]

  return f(params, batch, jnp.asarray(dL_dlogp_RN, jnp.float32))


def _objective_value_and_grad(objective, graphdef, params, batch):
  def f(p, b):
    loss_sum, weight, _ = objective(nnx.merge(graphdef, p), b, None)
    return loss_sum / weight

  return jax.jit(jax.value_and_grad(f))(params, {k: jnp.asarray(v) for k, v in batch.items()})


def _agg_weights(mask_RN, reduction):
  """∂(reduced loss)/∂ℓ_{r,n} for the reductions (aggregation.py's table)."""
  if reduction == "token-mean":
    return mask_RN / mask_RN.sum()
  seqs = (mask_RN.sum(1) > 0).sum()
  if reduction == "seq-mean-token-mean":
    return mask_RN / np.maximum(mask_RN.sum(1, keepdims=True), 1) / seqs
  if reduction == "seq-mean-token-sum":
    return mask_RN / seqs
  raise ValueError(reduction)


def _close(a, b, rtol=2e-4, atol=2e-6):
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["token-mean", "seq-mean-token-mean"])
def test_ppo_clip_loss_and_gradient_match_numpy(reduction):
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
  batch = _batch()
  logp = np.asarray(_score_logp(graphdef, params, batch), np.float64)
  # Old log-probs spread the ratios over both sides of the clip range [0.8, 1.2].
  shifts = np.array([[0.5, -0.5, 0.05, -0.05, 0.3]] * R)
  batch["old_logp"] = (logp + shifts).astype(np.float32)
  eps = 0.2
  objective = rl_objective(loss_kind="ppo", reduction=reduction, clip_eps=eps)
  loss, grad = _objective_value_and_grad(objective, graphdef, params, batch)

  m, A = batch["completion_mask"], batch["advantages"].astype(np.float64)
  ratio = np.exp(logp - batch["old_logp"])
  unclipped, clipped = -A * ratio, -A * np.clip(ratio, 1 - eps, 1 + eps)
  per_token = np.maximum(unclipped, clipped)
  w = _agg_weights(m, reduction)
  np.testing.assert_allclose(float(loss), np.sum(w * per_token), rtol=1e-5, atol=1e-7)
  # ∂ℓ/∂logp = −A·ρ where the unclipped term is the max (ratio in range or on the losing side), else 0.
  active = (unclipped >= clipped) | ((ratio >= 1 - eps) & (ratio <= 1 + eps))
  assert 0 < active[m > 0].mean() < 1  # both branches occur
  _close(grad, _reference_grad(graphdef, params, batch, w * np.where(active, -A * ratio, 0.0)))


def test_kl_k3_in_loss_gradient_matches_numpy():
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(1)))
  batch = _batch(1)
  logp = np.asarray(_score_logp(graphdef, params, batch), np.float64)
  batch["old_logp"] = logp.astype(np.float32)  # on-policy: ratio 1
  batch["ref_logp"] = (logp + np.random.default_rng(2).normal(scale=0.3, size=logp.shape)).astype(np.float32)
  beta = 0.3
  objective = rl_objective(loss_kind="ppo", reduction="token-mean", kl_coef=beta, kl_kind="k3")
  loss, grad = _objective_value_and_grad(objective, graphdef, params, batch)
  m, A = batch["completion_mask"], batch["advantages"]
  d = batch["ref_logp"] - logp  # log r
  k3 = np.exp(d) - d - 1
  w = _agg_weights(m, "token-mean")
  np.testing.assert_allclose(float(loss), np.sum(w * (-A + beta * k3)), rtol=1e-5, atol=1e-7)
  # ∂/∂logp: −A·ρ (ρ = 1) + β·(1 − exp(ref − logp)).
  _close(grad, _reference_grad(graphdef, params, batch, w * (-A + beta * (1 - np.exp(d)))))


def test_topr_sequence_weights_gradient_matches_numpy():
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(2)))
  batch = _batch(2)
  logp = np.asarray(_score_logp(graphdef, params, batch), np.float64)
  m = batch["completion_mask"]
  batch["advantages"] = (np.array([[1.0], [-1.0], [-1.0], [0.5]]) * m).astype(np.float32)
  # Row 1: π/μ < 1 (weight = the product of token ratios); row 2: π/μ > 1 (weight clipped to 1).
  batch["old_logp"] = (logp + np.array([[0.0], [0.2], [-0.2], [0.0]]) * m).astype(np.float32)
  objective = rl_objective(loss_kind="topr", reduction="seq-mean-token-sum")
  loss, grad = _objective_value_and_grad(objective, graphdef, params, batch)
  seq_ratio = np.exp(((logp - batch["old_logp"]) * m).sum(1))
  weight = np.where(batch["advantages"][:, 0] > 0, 1.0, np.minimum(seq_ratio, 1.0))
  assert weight[1] < 0.9 and weight[2] == 1.0
  w = _agg_weights(m, "seq-mean-token-sum")
  dl = -weight[:, None] * batch["advantages"]
  np.testing.assert_allclose(float(loss), np.sum(w * dl * logp), rtol=1e-5, atol=1e-6)
  _close(grad, _reference_grad(graphdef, params, batch, w * dl))


def test_value_loss_reaches_only_the_critic_and_matches_numpy():
  model = ActorCritic(CFG, rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model)
  batch = _batch(3)
  policy_graphdef = nnx.split(model.policy)[0]
  logp = np.asarray(_score_logp(policy_graphdef, params["policy"], batch))
  batch["old_logp"] = logp
  batch["advantages"] = np.zeros_like(logp)  # isolate the value loss
  rng = np.random.default_rng(4)
  batch["returns"] = rng.normal(size=logp.shape).astype(np.float32) * batch["completion_mask"]
  batch["old_values"] = rng.normal(scale=0.3, size=logp.shape).astype(np.float32)
  objective = rl_objective(loss_kind="ppo", reduction="token-mean", value_coef=0.5, value_clip=0.2)
  loss, grad = _objective_value_and_grad(objective, graphdef, params, batch)
  positions = jnp.maximum(jnp.cumsum(batch["mask"], 1) - 1, 0)
  # The critic's forward as one jitted program (run op by op, each op would compile on its own).
  critic_fn = jax.jit(lambda p, t, pos, seg: nnx.merge(graphdef, p).critic(t, positions_BL=pos,
                                                                             segment_ids_BL=seg))
  values_RS = critic_fn(params, jnp.asarray(batch["tokens"]), positions, jnp.asarray(batch["mask"]))
  v = np.asarray(values_RS)[:, P - 1 : P + N - 1]  # V(s_t) is read at the slot before token t
  R_, old = batch["returns"], batch["old_values"]
  v_clip = old + np.clip(v - old, -0.2, 0.2)
  expected = 0.5 * 0.5 * np.maximum((v - R_) ** 2, (v_clip - R_) ** 2)
  w = _agg_weights(batch["completion_mask"], "token-mean")
  np.testing.assert_allclose(float(loss), np.sum(w * expected), rtol=1e-5, atol=1e-7)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grad["policy"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grad["critic"]))


def test_bad_settings_fail_loudly():
  with pytest.raises(ValueError, match="unknown loss kind"):
    rl_objective(loss_kind="ppo2")
  with pytest.raises(ValueError, match="temperature"):
    rl_objective(temperature=0.0)
