"""Evaluation helpers: accuracy, AUROC, pass@k, maj@k, bootstrap CIs, best-of-N and vote selection."""

from w2s_jax.evals.metrics import accuracy, auroc, bootstrap_ci, maj_at_k, majority_vote, pass_at_k
from w2s_jax.evals.selection import best_of_n, borda_vote, self_certainty, weighted_vote

__all__ = [
  "accuracy", "auroc", "best_of_n", "bootstrap_ci", "borda_vote", "maj_at_k", "majority_vote", "pass_at_k",
  "self_certainty", "weighted_vote",
]
