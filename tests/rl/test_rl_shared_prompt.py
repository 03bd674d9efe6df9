"""`shared_prompt`: the grouped layout (each prompt once) gives the row layout's log-probs, losses and
gradients; the host checks pick it only for whole groups that share their prompt slots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.batch import group_minibatches
from w2s_jax.rl.objective import ActorCritic, completion_logprobs, groups_share_prompt, rl_objective
from w2s_jax.sampling.score import score_fn

U, G, P, N = 3, 4, 5, 6  # groups, rows per group, prompt slots, completion slots
CFG = get_preset("tiny", vocab_size=64, n_layers=2)


def _rollout(seed=0):
  """Sampler-layout rows: each group's left-padded prompt repeated G times, right-padded completions."""
  rng = np.random.default_rng(seed)
  prompt_len = np.array([5, 2, 1])
  p_mask = (np.arange(P)[None] >= P - prompt_len[:, None]).astype(np.int32)
  p_tok = rng.integers(3, 64, (U, P)) * p_mask
  c_len = rng.integers(0, N + 1, (U, G))
  c_len[0, 0] = N
  c_mask = (np.arange(N)[None, None] < c_len[..., None]).astype(np.int32)
  c_tok = rng.integers(3, 64, (U, G, N)) * c_mask
  rep = lambda a: np.repeat(a[:, None], G, axis=1)
  tokens = np.concatenate([rep(p_tok), c_tok], 2).reshape(U * G, P + N).astype(np.int32)
  mask = np.concatenate([rep(p_mask), c_mask], 2).reshape(U * G, P + N).astype(np.int32)
  return tokens, mask, c_mask.reshape(U * G, N).astype(np.float32)


def _jitted(fn, model, *args, **kwargs):
  """`fn(model, *args, **kwargs)` traced and compiled once (run op by op, each op compiles on its own)."""
  graphdef, params = nnx.split(model)
  return jax.jit(lambda p, *a: fn(nnx.merge(graphdef, p), *a, **kwargs))(params, *map(jnp.asarray, args))


def _batch(graphdef, params, seed=0, critic=False):
  tokens, mask, cmask = _rollout(seed)
  rng = np.random.default_rng(seed + 1)
  policy = nnx.merge(graphdef, params)
  policy = policy.policy if critic else policy
  logp = np.asarray(_jitted(score_fn, policy, tokens, mask, num_last=N)[0])
  batch = {"tokens": tokens, "mask": mask, "completion_mask": cmask,
           "old_logp": (logp + rng.normal(scale=0.2, size=logp.shape) * cmask).astype(np.float32),
           "ref_logp": (logp + rng.normal(scale=0.3, size=logp.shape) * cmask).astype(np.float32),
           "advantages": (rng.normal(size=(U * G, 1)) * cmask).astype(np.float32)}
  if critic:
    batch["returns"] = (rng.normal(size=cmask.shape) * cmask).astype(np.float32)
    batch["old_values"] = (rng.normal(scale=0.3, size=cmask.shape) * cmask).astype(np.float32)
  return batch


def _grouped(batch):
  return {k: v.reshape(U, G, *v.shape[1:]) for k, v in batch.items()}


def _loss_and_grad(objective, graphdef, params, batch):
  def f(p, b):
    loss_sum, weight, sums = objective(nnx.merge(graphdef, p), b, None)
    return loss_sum / weight, sums

  (loss, sums), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(
    params, {k: jnp.asarray(v) for k, v in batch.items()})
  return loss, sums, grad


def _close_trees(a, b, rtol=1e-4):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    y = np.asarray(y)
    np.testing.assert_allclose(np.asarray(x), y, rtol=rtol, atol=1e-5 * max(np.abs(y).max(), 1e-3),
                               err_msg=jax.tree_util.keystr(path))


def test_grouped_completion_logprobs_equal_score_fn():
  model = Transformer(CFG, rngs=nnx.Rngs(0))
  tokens, mask, _ = _rollout()
  want_lp, want_ent = _jitted(score_fn, model, tokens, mask, num_last=N, temperature=0.7)
  lp, ent = _jitted(completion_logprobs, model, tokens, mask, num_new=N, temperature=0.7, group_size=G)
  np.testing.assert_allclose(lp, want_lp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent, want_ent, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(lp)[mask[:, P:] == 0] == 0)


@pytest.mark.parametrize("kind,reduction", [("ppo", "token-mean"), ("gspo", "seq-mean-token-mean"),
                                            ("cispo", "seq-mean-token-sum")])
def test_grouped_layout_gives_the_row_layouts_loss_and_gradient(kind, reduction):
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(1)))
  batch = _batch(graphdef, params)
  objective = rl_objective(loss_kind=kind, reduction=reduction, clip_eps=0.2, kl_coef=0.1, temperature=0.9)
  loss, sums, grad = _loss_and_grad(objective, graphdef, params, batch)
  g_loss, g_sums, g_grad = _loss_and_grad(objective, graphdef, params, _grouped(batch))
  np.testing.assert_allclose(g_loss, loss, rtol=1e-5, atol=1e-6)
  for name in sums:
    np.testing.assert_allclose(g_sums[name], sums[name], rtol=1e-4, atol=1e-6, err_msg=name)
  assert any(np.abs(np.asarray(x)).max() > 0 for x in jax.tree.leaves(grad))
  _close_trees(g_grad, grad)


def test_grouped_layout_with_a_critic():
  graphdef, params = nnx.split(ActorCritic(CFG, rngs=nnx.Rngs(2)))
  batch = _batch(graphdef, params, seed=3, critic=True)
  objective = rl_objective(loss_kind="ppo", clip_eps=0.2, value_coef=0.5, value_clip=0.2)
  loss, _, grad = _loss_and_grad(objective, graphdef, params, batch)
  g_loss, _, g_grad = _loss_and_grad(objective, graphdef, params, _grouped(batch))
  np.testing.assert_allclose(g_loss, loss, rtol=1e-5, atol=1e-6)
  _close_trees(g_grad, grad)


def test_groups_share_prompt_checks_tokens_and_mask():
  tokens, mask, _ = _rollout()
  assert groups_share_prompt(tokens, mask, N, G)
  assert not groups_share_prompt(tokens, mask, N, 1)  # nothing to share
  assert not groups_share_prompt(tokens, mask, N, 5)  # 12 rows are not groups of 5
  other = tokens.copy()
  other[G + 1, P - 1] += 1  # group 1's second row has another prompt
  assert not groups_share_prompt(other, mask, N, G)
  other_mask = mask.copy()
  other_mask[2 * G, 0] = 1  # group 2's first row has another padding
  assert not groups_share_prompt(tokens, other_mask, N, G)


def test_group_minibatches_partition_whole_groups():
  parts = group_minibatches(24, 8, np.random.default_rng(0), group_size=4)
  assert len(parts) == 3 and sorted(np.concatenate(parts).tolist()) == list(range(24))
  for rows in parts:
    groups = rows.reshape(-1, 4)
    assert (groups == groups[:, :1] + np.arange(4)).all() and (groups[:, 0] % 4 == 0).all()
  with pytest.raises(ValueError, match="multiple of rollout.group_size=4"):
    group_minibatches(24, 6, np.random.default_rng(0), group_size=4)


def test_rl_iteration_is_the_same_with_the_switch_on_and_off(rl_smoke_sft, tmp_path, monkeypatch):
  """One GRPO iteration of the smoke config (recomputed old log-probs, KL in the loss, minibatches of whole
  groups): the grouped path is taken and its update metrics equal the row layout's."""
  import json

  from w2s_jax.config_files import load_config
  from w2s_jax.rl import objective as objective_lib
  from w2s_jax.rl.loop import train_rl

  checks = []
  real_check = objective_lib.groups_share_prompt
  spy = lambda *a: checks.append(real_check(*a)) or checks[-1]  # noqa: E731
  monkeypatch.setattr(objective_lib, "groups_share_prompt", spy)
  records = {}
  for shared in (True, False):
    c = load_config("grpo_tiny", "smoke")
    c.mesh.data, c.sft.workdir, c.total_steps, c.eval.samples = 1, str(rl_smoke_sft), 1, 0
    c.rollout.old_logprobs, c.train.group_minibatches, c.shared_prompt = "recompute", True, shared
    train_rl(c, tmp_path / str(shared))
    records[shared] = json.loads((tmp_path / str(shared) / "metrics.jsonl").read_text().splitlines()[-1])
  assert checks == [True]  # asked once, with the switch on, and the rollout's groups share their prompts
  on, off = records[True], records[False]
  assert on["updates"] == off["updates"] == 2 and on["reward_mean"] == off["reward_mean"]
  for name in ("loss", "pg_loss", "kl_ref", "entropy", "approx_kl", "ratio_mean"):
    np.testing.assert_allclose(on[name], off[name], rtol=1e-4, atol=1e-6, err_msg=name)
