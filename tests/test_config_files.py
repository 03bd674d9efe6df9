"""`changed_keys`: what counts as a changed setting when a run folder is reused."""

import json

import ml_collections

from w2s_jax.config_files import changed_keys


def _folder(tmp_path, saved):
  (tmp_path / "config.json").write_text(json.dumps(saved))
  return tmp_path


def test_a_new_unset_key_is_not_a_change_but_a_set_one_is(tmp_path):
  workdir = _folder(tmp_path, {"model": {"preset": "tiny"}, "optimizer": {"lr": 0.001}})
  unset = ml_collections.ConfigDict({"model": {"preset": "tiny", "dtype": None}, "optimizer": {"lr": 0.001}})
  assert changed_keys(unset, workdir) == []
  set_ = ml_collections.ConfigDict(
    {"model": {"preset": "tiny", "dtype": "bfloat16"}, "optimizer": {"lr": 0.001}})
  assert changed_keys(set_, workdir) == [("model.dtype", "<absent>", "bfloat16")]


def test_changed_and_removed_values_are_named_and_may_change_is_left_out(tmp_path):
  workdir = _folder(tmp_path, {"optimizer": {"lr": 0.001}, "batch_size": 8, "mesh": {"data": 2}})
  config = ml_collections.ConfigDict({"optimizer": {"lr": 0.002}, "mesh": {"data": 4}})
  assert changed_keys(config, workdir, may_change=("mesh",)) == [
    ("batch_size", 8, "<absent>"), ("optimizer.lr", 0.001, 0.002)]
