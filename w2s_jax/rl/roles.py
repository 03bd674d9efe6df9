"""Model sections of a pipeline config, each SFT'd first: `config[role]` holds `model` and `sft`.

On-policy distillation (`teacher`, `student`), W2SR (`weak`) and weak-to-strong reasoning (`weak`,
`strong`) name their models this way; each role is SFT'd (or reloaded) by `rl.sft_init.run_sft` in
`WORKDIR/role/sft` (or its shared `sft.workdir`) with the pipeline's seed, mesh and data sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from w2s_jax.models.presets import ModelConfig, from_section
from w2s_jax.models.transformer import Transformer
from w2s_jax.rl.sft_init import run_sft


def role_config(config: ml_collections.ConfigDict, role: str) -> ml_collections.ConfigDict:
  """The `run_sft` config of a model section (`config[role]` with `model` and `sft`) of a pipeline."""
  if role not in config:
    raise ValueError(f"the config has no section {role!r} (with `model` and `sft`)")
  c = ml_collections.ConfigDict()
  c.seed, c.sharding = int(config.seed), config.sharding
  c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
  c.model = ml_collections.ConfigDict(config[role].model.to_dict())
  c.data = ml_collections.ConfigDict(config.data.to_dict())
  c.sft = ml_collections.ConfigDict(config[role].sft.to_dict())
  return c


def role_model_config(config: ml_collections.ConfigDict, role: str) -> ModelConfig:
  """The model config of `config[role].model`."""
  return from_section(config[role].model)


def abstract_graphdef(model_cfg: ModelConfig) -> nnx.GraphDef:
  """A Transformer's graphdef without allocating weights (call under the mesh and rules)."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0))))[0]


def prepare_role(config: ml_collections.ConfigDict, role: str,
                 workdir: Path) -> tuple[ModelConfig, Any, dict[str, Any]]:
  """SFTs (or reloads) `config[role]` in `workdir/role/sft` (or its `sft.workdir`).

  Returns:
    (model config, params, SFT summary).
  """
  params, summary = run_sft(role_config(config, role), workdir / role)
  return role_model_config(config, role), params, summary
