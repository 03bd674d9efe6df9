"""Recipes: multi-run pipelines built from the library's loops, losses and protocol (one module each)."""
