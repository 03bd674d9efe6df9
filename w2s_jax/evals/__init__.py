"""Evaluation helpers: accuracy, AUROC, pass@k, maj@k, bootstrap confidence intervals."""

from w2s_jax.evals.metrics import accuracy, auroc, bootstrap_ci, maj_at_k, majority_vote, pass_at_k

__all__ = ["accuracy", "auroc", "bootstrap_ci", "maj_at_k", "majority_vote", "pass_at_k"]
