"""The policy-loss registry (w2s_jax/losses/policy.py): each config name's entry carries its kind's pure
function (w2s_jax/losses/policy_kinds.py), whose docstring gives the formula's paper."""

import re

from w2s_jax.losses import policy_kinds
from w2s_jax.losses.policy import POLICY_LOSSES, PolicyLoss


def test_entries_carry_their_kind_function():
  assert POLICY_LOSSES["dapo"].fn is POLICY_LOSSES["ppo"].fn is policy_kinds.ppo_clip_loss
  assert POLICY_LOSSES["dapo"].clip_eps == (0.2, 0.28) and POLICY_LOSSES["ppo"].symmetric_eps
  for name, entry in POLICY_LOSSES.items():
    assert isinstance(entry, PolicyLoss) and entry.name == name
    assert entry.fn.__module__ == policy_kinds.__name__, name
    assert re.search(r"arXiv \d{4}\.\d{5}|\b(19|20)\d\d\b", entry.fn.__doc__), name  # formula's paper
  assert {name for name, e in POLICY_LOSSES.items() if e.dual_clip} == {"ppo", "dapo", "clip_higher"}
