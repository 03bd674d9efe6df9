"""On-policy distillation: the token loss and its gradient vs NumPy, the objective on a real model, the
gold-solution batch layout, config validation, and the smoke config end to end through the entry point."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import load_config, run_main
from w2s_jax.data import reasoning
from w2s_jax.data.tokenizers import ByteTokenizer
from w2s_jax.models.presets import get_preset
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.rollout import encode_prompts
from w2s_jax.w2s.onpolicy_distill import (
  distill_token_loss,
  gold_rows,
  onpolicy_distill_objective,
  validate,
)

R, N, V = 2, 3, 5


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_jsd(zs, zt, beta, temperature=1.0):
  """Per-token generalized JSD_β in float64 (β = 1: KL(S‖T), β = 0: KL(T‖S))."""
  ls, lt = _np_log_softmax(zs / temperature), _np_log_softmax(zt / temperature)
  ps, pt = np.exp(ls), np.exp(lt)
  if beta == 1.0:
    return (ps * (ls - lt)).sum(-1)
  if beta == 0.0:
    return (pt * (lt - ls)).sum(-1)
  lm = np.log(beta * pt + (1 - beta) * ps)
  return beta * (pt * (lt - lm)).sum(-1) + (1 - beta) * (ps * (ls - lm)).sum(-1)


@pytest.fixture(scope="module")
def logits():
  rng = np.random.default_rng(0)
  zs = rng.normal(size=(R, N, V)) * 2.0
  zt = rng.normal(size=(R, N, V)) * 2.0
  mask = np.array([[1, 1, 0], [1, 1, 1]], np.float64)
  return zs, zt, mask


def _jax_loss_and_grad(zs, mask, **kw):
  def total(z):
    loss_RN, _ = distill_token_loss(z, kw.pop("tokens", jnp.zeros((R, N), jnp.int32)), jnp.asarray(mask),
                                    **kw)
    return loss_RN.sum(), loss_RN

  (_, loss_RN), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(zs, jnp.float32))
  return np.asarray(loss_RN), np.asarray(grad)


def test_full_reverse_kl_loss_and_gradient_match_numpy(logits):
  zs, zt, mask = logits
  loss, grad = _jax_loss_and_grad(zs, mask, estimator="full", beta=1.0,
                                  teacher_logits_RNV=jnp.asarray(zt, jnp.float32))
  ref = _np_jsd(zs, zt, 1.0) * mask
  np.testing.assert_allclose(loss, ref, atol=1e-5)
  # d KL(S‖T) / d z_s = p_s ⊙ (log p_s − log p_t − KL): the closed form, masked.
  ls, lt = _np_log_softmax(zs), _np_log_softmax(zt)
  kl = (np.exp(ls) * (ls - lt)).sum(-1, keepdims=True)
  ref_grad = np.exp(ls) * (ls - lt - kl) * mask[..., None]
  np.testing.assert_allclose(grad, ref_grad, atol=1e-5)
  assert ref[0, 2] == 0 and np.all(grad[0, 2] == 0)  # masked token: no loss, no gradient


@pytest.mark.parametrize("beta,temperature", [(0.0, 1.0), (0.5, 1.0), (0.9, 2.0)])
def test_full_gkd_mix_loss_and_gradient_match_numpy(logits, beta, temperature):
  zs, zt, mask = logits
  loss, grad = _jax_loss_and_grad(zs, mask, estimator="full", beta=beta, temperature=temperature,
                                  teacher_logits_RNV=jnp.asarray(zt, jnp.float32))
  np.testing.assert_allclose(loss, _np_jsd(zs, zt, beta, temperature) * mask, atol=1e-5)
  # Central finite differences of the float64 NumPy loss.
  num = np.zeros_like(zs)
  eps = 1e-6
  for idx in np.ndindex(zs.shape):
    up, down = zs.copy(), zs.copy()
    up[idx] += eps
    down[idx] -= eps
    num[idx] = ((_np_jsd(up, zt, beta, temperature) - _np_jsd(down, zt, beta, temperature)) * mask).sum() / (
      2 * eps)
  np.testing.assert_allclose(grad, num, atol=2e-5)
  if beta == 0.0:  # forward KL: the familiar p_s − p_t
    np.testing.assert_allclose(grad, (np.exp(_np_log_softmax(zs)) - np.exp(_np_log_softmax(zt)))
                               * mask[..., None], atol=1e-5)


def test_sampled_reverse_kl_estimator_matches_numpy(logits):
  zs, zt, mask = logits
  tokens = np.array([[0, 3, 4], [2, 2, 1]])
  ls, lt = _np_log_softmax(zs), _np_log_softmax(zt)
  pick = lambda lp: np.take_along_axis(lp, tokens[..., None], -1)[..., 0]
  old = pick(ls) + 0.1  # the sampling policy's log-probs (slightly stale)
  teacher = pick(lt)
  loss, grad = _jax_loss_and_grad(
    zs, mask, tokens=jnp.asarray(tokens), estimator="sampled",
    teacher_logp_RN=jnp.asarray(teacher, jnp.float32), old_logp_RN=jnp.asarray(old, jnp.float32))
  r = (teacher - old) * mask  # r_t = log T − log S_old
  np.testing.assert_allclose(loss, -r * pick(ls), atol=1e-5)
  onehot = np.eye(V)[tokens]
  np.testing.assert_allclose(grad, -r[..., None] * (onehot - np.exp(ls)), atol=1e-5)


def test_distill_token_loss_rejects_missing_inputs(logits):
  zs, _, mask = logits
  z = jnp.asarray(zs, jnp.float32)
  with pytest.raises(ValueError, match="teacher_logits"):
    distill_token_loss(z, jnp.zeros((R, N), jnp.int32), jnp.asarray(mask), estimator="full")
  with pytest.raises(ValueError, match="estimator"):
    distill_token_loss(z, jnp.zeros((R, N), jnp.int32), jnp.asarray(mask), estimator="nope")


def test_objective_on_real_models_equals_numpy_from_independent_forward():
  cfg = get_preset("tiny", vocab_size=16, n_layers=1, max_seq_len=16)
  student, teacher = Transformer(cfg, rngs=nnx.Rngs(0)), Transformer(cfg, rngs=nnx.Rngs(1))
  rows = [[1, 5, 6, 7, 8, 9], [1, 4, 3, 2]]  # the second row is left-padded by 2 slots
  S, n = 6, 3
  tokens = np.zeros((2, S), np.int32)
  mask = np.zeros((2, S), np.int32)
  for i, r in enumerate(rows):
    tokens[i, S - len(r):], mask[i, S - len(r):] = r, 1
  cmask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)

  forward = nnx.jit(lambda model, ids: model(ids))  # one compilation per row length, not one per op

  def slot_logits(model, row):  # plain forward of the unpadded row; logits predicting its last n tokens
    out = np.asarray(forward(model, jnp.asarray([row], jnp.int32)))[0].astype(np.float64)
    return out[len(row) - n - 1 : len(row) - 1]

  zs = np.stack([slot_logits(student, r) for r in rows])
  zt = np.stack([slot_logits(teacher, r) for r in rows])
  ref = (_np_jsd(zs, zt, 1.0) * cmask).sum() / cmask.sum()
  obj = onpolicy_distill_objective(estimator="full", beta=1.0)
  t_logits = np.stack([slot_logits(teacher, r) for r in rows]).astype(np.float32)
  batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask), "completion_mask": jnp.asarray(cmask),
           "teacher_logits": jnp.asarray(t_logits)}
  loss_sum, weight, sums = nnx.jit(obj)(student, batch, jax.random.key(0))
  assert float(weight) == cmask.sum()
  np.testing.assert_allclose(float(loss_sum) / float(weight), ref, rtol=1e-4)
  np.testing.assert_allclose(float(sums["reverse_kl"]) / float(weight), ref, rtol=1e-4)


def test_gold_rows_layout():
  tok = ByteTokenizer()
  problems = reasoning.generate("chain_sum", "train", 2, seed=0)
  prompts = encode_prompts(problems, tok, 128)
  out = gold_rows(prompts, tok, num_new=40)
  for i, p in enumerate(problems):
    ids = [*tok.encode(p.solution), tok.eos_id][:40]
    assert out["tokens"][i, 128 : 128 + len(ids)].tolist() == ids
    assert out["completion_mask"][i].tolist() == [1] * len(ids) + [0] * (40 - len(ids))
    prompt_mask = prompts.mask_BP[i].astype(int).tolist()
    assert out["mask"][i].tolist() == prompt_mask + out["completion_mask"][i].tolist()
  assert out["tokens"].shape == (2, 168)


def test_validate_names_the_field():
  c = load_config("onpolicy_distill", "smoke")
  c.loss.name = "sampled"
  c.distill.on_policy_frac = 0.5
  with pytest.raises(ValueError, match="on_policy_frac"):
    validate(c)
  c = load_config("onpolicy_distill", "smoke")
  c.loss.beta = 1.5
  with pytest.raises(ValueError, match="loss.beta"):
    validate(c)
  c = load_config("onpolicy_distill", "smoke")
  c.student.model.vocab_size = 1024
  with pytest.raises(ValueError, match="vocab_size"):
    validate(c)
  with pytest.raises(ValueError, match="unknown config arg"):
    load_config("onpolicy_distill", "bogus")
  w2s = load_config("onpolicy_distill", "w2s")
  assert w2s.teacher.model.preset == "ladder-0" and w2s.student.model.preset == "tiny"


def test_smoke_config_via_entry_point_and_resume(tmp_path, rl_smoke_sft, ladder0_smoke_sft):
  # The smoke's teacher is rl_base's smoke SFT phase and its student tests/w2s/conftest.py's ladder-0 SFT:
  # the worker's shared folders are reloaded.
  argv = ["--config=configs/onpolicy_distill.py:smoke", f"--workdir={tmp_path}",
          f"--config.teacher.sft.workdir={rl_smoke_sft}", f"--config.student.sft.workdir={ladder0_smoke_sft}",
          "--config.mesh.data=1"]
  out = run_main(argv)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["final_step"] == 3
  assert 0.0 <= summary["teacher_eval"]["pass@1"] <= 1.0
  before, after = summary["student_eval_initial"], summary["student_eval"]
  assert "pass@1" in before and "pass@1" in after
  assert after["reverse_kl"] < before["reverse_kl"]  # distillation moved the student towards the teacher
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:  # β = 1, token-mean: the loss is the mean per-token reverse KL
    assert r["on_policy"] == 1.0
    np.testing.assert_allclose(r["loss"], r["reverse_kl"], rtol=1e-5)
  again = run_main(argv)
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads(again.stdout.strip().splitlines()[-1])["start_step"] == 3
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
