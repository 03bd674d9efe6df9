"""Rewards: named terms composed from the config (`compose`)."""

from w2s_jax.rewards.compose import RewardConfig, reward_terms

__all__ = ["RewardConfig", "reward_terms"]
