"""One spelling per idea: old config keys are refused with the new name; every config uses the vocabulary."""

import ml_collections
import pytest

from tests.helpers import load_config
from w2s_jax.config_files import ConfigError, config_names, flatten, load_common
from w2s_jax.rl.sft_init import sft_config
from w2s_jax.train.config_lib import (
  OLD_KEYS,
  check_old_keys,
  default_warmup_steps,
  renamed_key,
  train_defaults,
  validate_config,
)

# Each config's args beyond None / "smoke" (the ones its get_config accepts).
MORE_ARGS = {"onpolicy_distill": ("w2s", "w2s_smoke", "gcd", "gcd_w2s"), "w2sr": ("gcd",),
             "w2s_reasoning": ("gcd",), "easy_to_hard": ("gcd", "gcd_smoke"),
             "quickstart": ("ladder", "ladder_smoke")}


def _all_configs():
  for name in config_names():
    for arg in (None, "smoke", *MORE_ARGS.get(name, ())):
      yield f"{name}:{arg}", load_config(name, arg)


@pytest.mark.parametrize("old,new", [
  ("data.n_test", "data.eval_size"), ("data.test_size", "data.eval_size"),
  ("eval_problems", "data.eval_size"),
  ("data_seed", "data.seed"), ("data.n_train", "data.train_size"), ("train.steps", "train.total_steps"),
  ("rl.iterations", "rl.total_steps"), ("models.weak.steps", "models.weak.total_steps"),
  ("teacher.sft.lr", "teacher.sft.optimizer.lr"), ("sft.warmup_steps", "sft.optimizer.warmup_steps"),
  ("prm.lr", "prm.optimizer.lr"), ("loss.kind", "loss.name"),
  ("eval.every_steps", "eval_every_steps"), ("data.data_seed", "data.seed"),
  ("objective.name", "loss.name"), ("objective.label_smoothing", "loss.label_smoothing"),
  ("stage2.objective.beta", "stage2.loss.beta"),
  ("distill.estimator", "loss.name"), ("distill.beta", "loss.beta"), ("train.reduction", "loss.reduction"),
  ("model.sft.steps", "model.sft.total_steps"), ("model.sft.lr", "model.sft.optimizer.lr"),
  # Current spellings, and keys that only end like an old one, are not renamed.
  ("data.eval_size", None), ("train.total_steps", None), ("steps", None), ("models.steps", None),
  ("x.train.steps", None), ("sft.optimizer.lr", None), ("model.sft.total_steps", None),
  ("model.sft.optimizer.lr", None),
])
def test_renamed_key(old, new):
  assert renamed_key(old) == new


def test_an_old_key_in_a_config_names_the_new_one():
  c = load_config("sft_tiny", "smoke")
  c.data.n_test = 5
  with pytest.raises(ConfigError) as e:
    validate_config(c, "/tmp/w")
  assert str(e.value) == "config.data.n_test was renamed config.data.eval_size"
  c = load_config("delta_learning", "smoke")
  c.models.weak.steps = 3
  with pytest.raises(ConfigError) as e:
    check_old_keys(c)
  assert str(e.value) == "config.models.weak.steps was renamed config.models.weak.total_steps"


def test_no_config_uses_an_old_spelling():
  for _, c in _all_configs():
    check_old_keys(c)  # raises naming the config's old key


def test_every_new_key_is_spelled_by_some_config():
  # The table points at keys that exist: a typo in OLD_KEYS would send users to a key no config has.
  keys = {k for _, c in _all_configs() for k in flatten(c.to_dict())}
  for old, new in OLD_KEYS.items():
    parts = new.split(".")
    assert any(len(k.split(".")) == len(parts) and all(p in ("*", q) for p, q in zip(parts, k.split(".")))
               for k in keys), (old, new)


def test_sub_run_optimizer_comes_from_its_config_section():
  c = load_config("rl_base")
  assert sft_config(c).optimizer.to_dict() == {  # rl_base's `sft.optimizer`, as the README states it
    "name": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup_steps": 100, "end_lr_frac": 0.1,
    "weight_decay": 0.01, "b1": 0.9, "b2": 0.99, "eps": 1e-8, "clip_norm": 1.0}
  c.sft.optimizer.lr, c.sft.optimizer.b2 = 1e-3, 0.95
  opt = sft_config(c).optimizer
  assert (opt.lr, opt.b2) == (1e-3, 0.95)
  section = ml_collections.ConfigDict({"name": "adamw", "lr": 0.5, "schedule": "constant"})
  copied = train_defaults(total_steps=10, batch_size=2, optimizer=section).optimizer
  assert copied.to_dict() == section.to_dict()
  assert train_defaults(total_steps=100, batch_size=2, lr=0.5).optimizer.warmup_steps == 5  # 5 % of steps
  with pytest.raises(ValueError, match="exactly one"):
    train_defaults(total_steps=10, batch_size=2, optimizer=section, lr=0.5)


def test_default_warmup_is_five_percent_at_least_one_and_follows_a_reference():
  assert [default_warmup_steps(t) for t in (1, 19, 20, 39, 40, 400)] == [1, 1, 1, 1, 2, 20]
  c = ml_collections.ConfigDict({"total_steps": 0})
  warmup = default_warmup_steps(c.get_ref("total_steps"))
  for total in range(300):
    c.total_steps = total
    assert warmup.get() == max(total // 20, 1), total
  sweep = load_config("w2s_sweep", "smoke")  # its classifiers' warmup follows train.total_steps
  assert (sweep.train.total_steps, sweep.train.optimizer.warmup_steps) == (30, 1)
  sweep.train.total_steps = 400
  assert sweep.train.optimizer.warmup_steps == 20


def test_common_is_shared_sections_not_a_config():
  assert "common" not in config_names()
  assert load_common() is load_common()
  # prm_tiny takes rl_base's model/data/sft sections instead of deleting its RL-only keys.
  rl_only = {"sample_budget", "rl_seed", "reward", "dynamic_sampling", "advantage", "loss", "kl", "rft",
             "train", "optimizer"}
  for arg in (None, "smoke"):
    c = load_config("prm_tiny", arg)
    assert not rl_only & set(c.keys()) and c.sft.optimizer.lr == 3e-3


@pytest.mark.parametrize("name,key,value,new", [
  ("onpolicy_distill", "distill.estimator", "full", "loss.name"),
  ("dpo_tiny", "objective.name", "dpo", "loss.name"),
  ("grpo_tiny", "loss.kind", "ppo", "loss.name"),
  ("sft_tiny", "data.data_seed", 0, "data.seed"),
  ("dpo_tiny", "model.sft.steps", 1500, "model.sft.total_steps"),
  ("kto_tiny", "model.sft.lr", 3e-3, "model.sft.optimizer.lr"),
])
def test_an_old_loss_or_seed_key_in_a_config_names_the_new_one(name, key, value, new):
  c = load_config(name, "smoke")
  *sections, field = key.split(".")
  with c.unlocked():
    section = c
    for part in sections:
      section[part] = section.get(part) or ml_collections.ConfigDict()
      section = section[part]
    section[field] = value
  with pytest.raises(ConfigError) as e:
    check_old_keys(c)
  assert str(e.value) == f"config.{key} was renamed config.{new}"
