"""LoRA as a property of the model (`model.lora`): SFT and RL train adapters through the one runtime."""

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import load_config, run_main
from w2s_jax.checkpoint import Checkpointer
from w2s_jax.main import TASKS
from w2s_jax.models import lora
from w2s_jax.models.presets import from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.loop import train_rl
from w2s_jax.train.loop import train
from w2s_jax.train.tasks import sft_setup


class _Boom(RuntimeError):
  pass


class _FailingBatches:
  """The task's batches, raising at batch `fail_at` (after the checkpoint of the step before)."""

  def __init__(self, batches, fail_at):
    self.batches, self.fail_at = batches, fail_at

  def __getitem__(self, i):
    if i == self.fail_at:
      raise _Boom(f"batch {i}")
    return self.batches[i]


def _sft_config(total_steps=4):
  c = load_config("sft_tiny", "smoke")
  c.model.lora.rank, c.model.lora.targets = 4, "q,v,down"
  c.total_steps, c.checkpoint_every_steps, c.eval_every_steps = total_steps, 2, 2
  c.data.train_size, c.data.eval_size, c.mesh.data = 64, 16, 1
  return c


def _unwrapped(model):
  """`model` with every `LoRAProjection` replaced by its base weight (the adapters dropped)."""
  for block in model.blocks:
    for sub, attr, _ in lora.TARGETS.values():
      proj = getattr(getattr(block, sub), attr)
      if isinstance(proj, lora.LoRAProjection):
        setattr(getattr(block, sub), attr, proj.base)
  return model


def test_lora_sft_trains_only_adapters_releases_the_lock_and_checkpoints_no_base(tmp_path):
  c = _sft_config()
  setup = sft_setup(c)
  setup.train_batches = _FailingBatches(setup.train_batches, fail_at=2)
  with pytest.raises(_Boom):
    train(c, tmp_path, setup)  # steps 1, 2 trained and checkpointed; batch 2 raises
  summary = train(c, tmp_path, sft_setup(c))  # the same process: the checkpoint lock was released
  assert summary["start_step"] == 2 and summary["final_step"] == 4
  state = summary["state"]

  # The state's params are the adapters: q, v, down of 2 blocks, A and B each; all moved from init.
  leaves = jax.tree.leaves(state.params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert len(leaves) == 2 * 3 * 2 and all(isinstance(v, lora.LoRAParam) for v in leaves)
  fresh = Transformer(from_section(c.model), rngs=nnx.Rngs(c.seed))
  # The base as the runtime initialises it (under jit: eager init differs in the last bit).
  fresh_state = jax.jit(lambda: nnx.split(Transformer(from_section(c.model), rngs=nnx.Rngs(c.seed)))[1])()
  lora.LoRASpec.from_section(c.model.lora).apply(fresh, seed=c.seed)
  _, init_adapters, _ = nnx.split(fresh, lora.TRAINABLE, ...)
  for old, cur in zip(jax.tree.leaves(init_adapters), jax.tree.leaves(state.params)):
    assert not np.array_equal(old, cur)
  # The base is bitwise the model's own initialisation.
  graphdef = nnx.split(nnx.eval_shape(lambda: lora.LoRASpec.from_section(c.model.lora).apply(
    Transformer(from_section(c.model), rngs=nnx.Rngs(0)), seed=0)))[0]
  trained = _unwrapped(nnx.merge(graphdef, state.params, state.frozen))
  base_leaves = jax.tree.leaves(nnx.split(trained)[1])
  fresh_leaves = jax.tree.leaves(fresh_state)
  assert len(base_leaves) == len(fresh_leaves)
  for old, cur in zip(fresh_leaves, base_leaves):
    np.testing.assert_array_equal(old, cur)

  # A checkpoint holds adapters + optimizer + counters, not the base: it restores onto the state without
  # `frozen` (to the bit) and refuses the state with it.
  with Checkpointer(tmp_path / "checkpoints", read_only=True) as ckpt:
    restored, data_state, _ = ckpt.restore(state.replace(frozen=None), step=4)
    with pytest.raises(ValueError):
      ckpt.restore(state, step=4)
  assert data_state == {"next_batch": 4} and restored.frozen is None
  for saved, cur in zip(jax.tree.leaves((restored.params, restored.opt_state)),
                        jax.tree.leaves((state.params, state.opt_state)), strict=True):
    np.testing.assert_array_equal(saved, cur)


def _main(workdir, *extra):
  out = run_main(["--config=configs/sft_tiny.py:smoke", f"--workdir={workdir}", "--config.model.lora.rank=4",
                  "--config.total_steps=12", "--config.checkpoint_every_steps=6",
                  "--config.data.train_size=128", "--config.data.eval_size=16", "--config.mesh.data=1",
                  *extra])
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_lora_sft_through_main_learns_and_resumes_bit_identically(tmp_path):
  full = _main(tmp_path)
  assert [r["step"] for r in full] == list(range(1, 13))
  assert full[-1]["loss"] < full[0]["loss"] - 0.3, [r["loss"] for r in full]
  assert json.loads((tmp_path / "config.json").read_text())["model"]["lora"]["rank"] == 4
  shutil.rmtree(tmp_path / "checkpoints" / "12")  # as if killed after the step-6 checkpoint
  resumed = _main(tmp_path)
  drop = ("tokens_per_s",)  # a wall-clock rate
  for a, b in zip(full, resumed, strict=True):
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_grpo_with_lora_runs_and_keeps_its_sft_phase_a_full_fine_tune(tmp_path, rl_smoke_sft):
  c = load_config("grpo_tiny", "smoke")
  c.mesh.data = 1
  c.model.lora.rank = 4
  c.total_steps = 2
  # The RL smokes' SFT phase (tests/conftest.py): run_sft reuses a folder only when the SFT config it
  # derives equals the saved one, so reusing it is itself the check that LoRA stays out of that config.
  c.sft.workdir = str(rl_smoke_sft)
  summary = train_rl(c, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
  evals = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals] == [0, 2]
  state = summary["state"]
  assert all(isinstance(v, lora.LoRAParam)
             for v in jax.tree.leaves(state.params, is_leaf=lambda x: isinstance(x, nnx.Variable)))
  sft = json.loads((rl_smoke_sft / "config.json").read_text())
  assert "lora" not in sft["model"]  # the SFT phase trained the base; its folder's identity is unchanged
  assert summary["eval_initial"] == {k: v for k, v in evals[0].items() if k != "step"}


def test_onpolicy_distillation_trains_student_adapters(tmp_path, rl_smoke_sft):
  from w2s_jax.w2s.onpolicy_distill import run_onpolicy_distill

  c = load_config("onpolicy_distill", "smoke")
  c.mesh.data = 1
  c.student.model.lora.rank = 4
  # The smoke's teacher SFT phase is rl_base's (tests/conftest.py): reloaded only if its config is unchanged.
  c.teacher.sft.workdir = str(rl_smoke_sft)
  summary = run_onpolicy_distill(c, tmp_path)
  assert summary["final_step"] == 3
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
  before, after = summary["student_eval_initial"], summary["student_eval"]
  assert after["reverse_kl"] != before["reverse_kl"]  # the adapters moved the student
  for sft in (rl_smoke_sft, tmp_path / "student" / "sft"):  # the SFT phases trained the base models
    assert "lora" not in json.loads((sft / "config.json").read_text())["model"]


@pytest.mark.parametrize("name,trained", [("dpo_tiny", {"LoRAParam"}),
                                          ("reward_model_tiny", {"LoRAParam", "Param"})])
def test_preference_runs_train_adapters_and_a_fresh_head(tmp_path, name, trained):
  c = load_config(name, "smoke")
  c.model.lora.rank, c.model.lora.alpha, c.model.lora.targets = 4, 8.0, "q,v"
  c.total_steps, c.eval_every_steps, c.checkpoint_every_steps, c.mesh.data = 4, 2, 2, 1
  summary = train(c, tmp_path, TASKS[c.task](c))
  leaves = jax.tree.leaves(summary["state"].params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert {type(v).__name__ for v in leaves} == trained  # a reward model's head is a plain Param
  assert summary["last"]["eval_loss"] < summary["last"]["eval_loss_start"] == pytest.approx(np.log(2))


def test_sft_phase_config_never_carries_lora():
  from w2s_jax.rl.sft_init import sft_config

  c = load_config("grpo_tiny", "smoke")
  plain = sft_config(c).to_dict()
  c.model.lora.rank = 4
  assert "lora" not in plain["model"] and sft_config(c).to_dict() == plain  # one SFT folder for both
