"""Shared-prompt pair batches (`shared_prompt`): the same log-probs, DPO-family losses and gradients as the
[2B, L] rows, each pair's prompt run once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.train import preference_objectives as po
from w2s_jax.train import preference_tasks as pt
from w2s_jax.train.preference_shared import pair_lengths, share_prompts

CFG = get_preset("tiny", n_layers=2)
PROMPTS = ["2+3=", "a much longer prompt: 17*3=", "x", "what is 9-4? "]


def _pairs():
  """Rows of 4 pairs with prompts and completions of different lengths, then one all-zero (padding) pair."""
  tok = ByteTokenizer()
  chosen, _ = pt.encode_rows(PROMPTS, ["5", "51, since 17*3 is 51", "yes", "5."], tok, 48)
  rejected, _ = pt.encode_rows(PROMPTS, ["six", "52", "no, it is not", "4"], tok, 48)
  pad = lambda v: np.concatenate([v, np.zeros((1, v.shape[1]), v.dtype)])
  chosen, rejected = ({k: pad(v) for k, v in rows.items()} for rows in (chosen, rejected))
  batch = {k: np.concatenate([chosen[k], rejected[k]]) for k in chosen}
  batch[po.REF_LOGPS] = np.random.default_rng(0).normal(-30, 3, size=10).astype(np.float32)
  batch[po.REF_LOGPS][[4, 9]] = 0.0
  return chosen, rejected, batch


@functools.partial(jax.jit, static_argnums=0)
def _batch_logps(graphdef, params, batch):
  """`po.batch_logps` of the model (one compiled program per layout, shared by the parametrized losses;
  eager, the forward compiled op by op, ~280 small programs)."""
  return po.batch_logps(nnx.merge(graphdef, params), batch)


def _loss_and_grad(objective, graphdef, params, batch):
  def f(p):
    loss_sum, weight, sums = objective(nnx.merge(graphdef, p), {k: jnp.asarray(v) for k, v in batch.items()},
                                       None)
    return loss_sum / weight, sums

  return jax.jit(jax.value_and_grad(f, has_aux=True))(params)


def test_share_prompts_layout_and_lengths():
  chosen, rejected, batch = _pairs()
  P, C = pair_lengths(chosen, rejected)
  assert P == 1 + len("a much longer prompt: 17*3=")  # BOS + the longest prompt
  assert C == len("51, since 17*3 is 51")  # the longest completion's inputs (EOS is only a target)
  shared = share_prompts(batch, P, C)
  assert shared["prompt_inputs"].shape == (5, P) and shared["pair_inputs"].shape == (5, 2, C)
  assert shared["pair_targets"].shape == (5, 2, 1 + C)
  np.testing.assert_array_equal(shared["pair_loss_mask"].sum((1, 2)), batch["loss_mask"].reshape(2, 5, -1)
                                .sum((0, 2)))
  assert not shared["prompt_segment_ids"][4].any() and not shared["pair_loss_mask"][4].any()


@pytest.mark.parametrize("loss,kwargs", [("dpo", {"beta": 0.1}), ("ipo", {"beta": 0.5}), ("simpo", {}),
                                         ("rpo", {"beta": 0.1, "rpo_alpha": 1.0})])
def test_shared_prompt_batch_gives_the_rows_loss_and_gradient(loss, kwargs):
  chosen, rejected, batch = _pairs()
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
  shared = share_prompts(batch, *pair_lengths(chosen, rejected))
  want = _batch_logps(graphdef, params, {k: jnp.asarray(v) for k, v in batch.items()})
  got = _batch_logps(graphdef, params, {k: jnp.asarray(v) for k, v in shared.items()})
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(got[1], want[1])
  objective = po.preference_objective(loss, **kwargs)
  (v_rows, m_rows), g_rows = _loss_and_grad(objective, graphdef, params, batch)
  (v_sh, m_sh), g_sh = _loss_and_grad(objective, graphdef, params, shared)
  np.testing.assert_allclose(v_sh, v_rows, rtol=1e-5, atol=1e-6)
  for name in m_rows:
    np.testing.assert_allclose(m_sh[name], m_rows[name], rtol=1e-4, atol=1e-4, err_msg=name)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(g_sh), jax.tree.leaves(g_rows), strict=True):
    y = np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * np.abs(y).max(),
                               err_msg=jax.tree_util.keystr(path))


def test_share_prompts_refuses_pairs_with_different_prompts_or_too_long():
  chosen, rejected, batch = _pairs()
  P, C = pair_lengths(chosen, rejected)
  other = dict(batch)
  other["inputs"] = batch["inputs"].copy()
  other["inputs"][5 + 2, 1] += 1  # pair 2's rejected row has another prompt token
  with pytest.raises(ValueError, match="pair 2 of the batch: its chosen and rejected rows have different"):
    share_prompts(other, P, C)
  with pytest.raises(ValueError, match="pair 1: prompt of 28"):
    share_prompts(batch, P - 1, C)


def test_records_setup_trains_the_same_with_the_switch_on_and_off(tmp_path):
  """Two DPO steps through the task's setup and the train loop: shared-prompt batches (what the preference
  task builds by default) give the row batches' losses and held-out metrics."""
  import json

  from w2s_jax.train.config_lib import train_defaults
  from w2s_jax.train.loop import train

  tok = ByteTokenizer()
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, n_layers=1)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  pairs = [{"prompt": p, "chosen": f"yes {i}", "rejected": f"no, {i * 7}"} for i, p in enumerate(PROMPTS)]
  records = {"train": {"pairs": pairs, "unpaired": []}, "eval": {"pairs": pairs[:2], "unpaired": []}}
  logs = {}
  for shared in (True, False):
    setup = pt.records_setup(records, cfg, graphdef, params, tok, objective={"name": "dpo", "beta": 0.1},
                             batch_size=2, seq_len=48, eval_batches=1, seed=0, shared_prompt=shared)
    assert ("prompt_inputs" in setup.eval_batches[0]) == shared
    c = train_defaults(total_steps=2, batch_size=2, lr=1e-2)
    c.mesh.data, c.eval_every_steps, c.log_every_steps = 1, 2, 1
    train(c, tmp_path / str(shared), setup)
    lines = (tmp_path / str(shared) / "metrics.jsonl").read_text().splitlines()
    logs[shared] = [json.loads(line) for line in lines]
  assert len(logs[False]) == 2 and "eval_loss" in logs[False][-1]
  for on, off in zip(logs[True], logs[False], strict=True):
    for name in ("loss", "rewards/margins", "logps/chosen", "eval_loss"):
      if name in off or name in on:
        np.testing.assert_allclose(on[name], off[name], rtol=1e-4, atol=1e-5, err_msg=name)
