"""The one loop runtime: every loop releases the checkpoint lock after an exception (a second run in the
same process is not refused), and the step-0 evaluation runs, is logged once and is read back on resume."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import Linear4, load_config, squared_output_objective
from w2s_jax import sharding as shd
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl import roles
from w2s_jax.train.config_lib import train_defaults
from w2s_jax.train.loop import Setup, train


class _Boom(RuntimeError):
  pass


class _Batches:
  """Batch i is x = i + 1 everywhere; batch `fail_at` raises (the injected exception)."""

  def __init__(self, fail_at: int | None = None):
    self.fail_at = fail_at

  def __getitem__(self, i):
    if i == self.fail_at:
      raise _Boom(f"batch {i}")
    return {"x": np.full((2, 4), i + 1, np.float32)}


def _records(workdir, name="metrics.jsonl"):
  return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


def _sft_config(total_steps=4):
  c = train_defaults(total_steps=total_steps, batch_size=2, lr=1e-2)
  c.checkpoint_every_steps, c.log_every_steps, c.eval_every_steps, c.mesh.data = 1, 1, 2, 1
  return c


EVAL_X = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(2, 4)


def _setup(fail_at=None):
  return Setup(make_model=Linear4, objective=squared_output_objective, train_batches=_Batches(fail_at),
               eval_batches=[{"x": EVAL_X}], start_eval=("eval_loss",))


def test_sft_loop_releases_the_lock_and_resumes_in_the_same_process(tmp_path):
  with pytest.raises(_Boom):
    train(_sft_config(), tmp_path, _setup(fail_at=2))  # steps 1 and 2 checkpointed, batch 2 raises
  summary = train(_sft_config(), tmp_path, _setup())  # before the runtime: refused, the lock still held
  assert summary["start_step"] == 2 and summary["final_step"] == 4
  assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4]


def test_sft_step0_evaluation_is_logged_once_and_joins_every_record(tmp_path):
  # The start model's eval loss by hand: Σ (x·W + b)² of the model initialised with the config's seed.
  model = Linear4(nnx.Rngs(0))
  w, b = np.asarray(model.w.kernel[...]), np.asarray(model.w.bias[...])
  start_loss = float(np.sum((EVAL_X @ w + b) ** 2))
  train(_sft_config(total_steps=2), tmp_path, _setup())
  summary = train(_sft_config(), tmp_path, _setup())  # resumed at step 2: the start eval is read back
  assert summary["start_step"] == 2
  evals = _records(tmp_path, "eval.jsonl")
  assert [e["step"] for e in evals] == [0, 2, 4]
  np.testing.assert_allclose(evals[0]["eval_loss"], start_loss, rtol=1e-5)
  records = _records(tmp_path)
  assert all(r["eval_loss_start"] == evals[0]["eval_loss"] for r in records)
  assert [r["step"] for r in records if "eval_loss" in r] == [2, 4]
  assert summary["eval_initial"]["eval_loss"] == evals[0]["eval_loss"]


def _random_params(config, model_section):
  with jax.set_mesh(shd.make_mesh(dict(config.mesh))), nnx.logical_axis_rules(shd.get_rules(config.sharding)):
    return jax.jit(lambda: nnx.split(Transformer(from_section(model_section), rngs=nnx.Rngs(0)))[1])()


def _boom(*args, **kwargs):
  raise _Boom("the first iteration's rollout failed")


def test_rl_loop_step0_eval_then_exception_then_a_second_run_is_not_refused(tmp_path, monkeypatch):
  from w2s_jax.rl import loop as rl_loop

  c = load_config("grpo_tiny", "smoke")
  c.mesh.data, c.data.train_size, c.data.eval_size, c.eval.samples, c.eval.ks = 1, 16, 2, 2, [1, 2]
  c.rollout.max_new_tokens = 16
  monkeypatch.setattr(rl_loop, "run_sft", lambda config, workdir: (_random_params(config, config.model), {}))
  monkeypatch.setattr(rl_loop, "sample_groups", _boom)
  for _ in range(2):  # the second run resumes the same folder: the lock was released, step 0 not redone
    with pytest.raises(_Boom):
      rl_loop.train_rl(c, tmp_path)
    evals = _records(tmp_path, "eval.jsonl")
    assert [e["step"] for e in evals] == [0] and 0.0 <= evals[0]["pass@1"] <= evals[0]["pass@2"] <= 1.0


def test_distill_loop_step0_eval_then_exception_then_a_second_run_is_not_refused(tmp_path, monkeypatch):
  from w2s_jax.w2s import onpolicy_distill as od

  c = load_config("onpolicy_distill", "smoke")
  c.mesh.data, c.data.train_size, c.data.eval_size, c.eval.samples, c.eval.ks = 1, 16, 2, 2, [1, 2]
  c.rollout.max_new_tokens, c.distill.on_policy_frac = 16, 1.0
  monkeypatch.setattr(od, "prepare_role", lambda config, role, workdir: (
    roles.role_model_config(config, role), _random_params(config, config[role].model), {}))
  monkeypatch.setattr(od, "sample_groups", _boom)
  for _ in range(2):
    with pytest.raises(_Boom):
      od.run_onpolicy_distill(c, tmp_path)
    evals = _records(tmp_path, "eval.jsonl")
    assert [e["step"] for e in evals] == [0] and "reverse_kl" in evals[0]
    assert "pass@1" in json.loads((tmp_path / "teacher_eval.json").read_text())


def test_preference_step0_evaluation_is_the_reference_itself(tmp_path):
  """DPO with the start model as reference: at step 0 every margin is 0, so the held-out loss is log 2
  and no pair is ranked right (accuracy 0); the runtime's step-0 evaluation logs exactly that."""
  from w2s_jax.data.tokenizers import ByteTokenizer
  from w2s_jax.models.presets import get_preset
  from w2s_jax.train import preference_tasks as pt

  tok = ByteTokenizer()
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  pairs = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]
  records = {"train": {"pairs": pairs, "unpaired": []}, "eval": {"pairs": pairs, "unpaired": []}}
  setup = pt.records_setup(records, cfg, graphdef, params, tok, objective={"name": "dpo", "beta": 0.1},
                           batch_size=2, seq_len=24, eval_batches=2, seed=0)
  c = train_defaults(total_steps=1, batch_size=2, lr=1e-3)
  c.mesh.data, c.eval_every_steps = 1, 1
  train(c, tmp_path, setup)
  start = _records(tmp_path, "eval.jsonl")[0]
  assert start["step"] == 0 and start["eval_reward_accuracy"] == 0.0
  np.testing.assert_allclose(start["eval_loss"], np.log(2), atol=1e-5)
  (record,) = _records(tmp_path)
  assert record["eval_loss_start"] == start["eval_loss"] and record["eval_reward_accuracy_start"] == 0.0
