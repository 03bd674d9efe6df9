"""Text in, text out: sampled completions of prompts, for pipelines that build data from a model's samples
(preference pairs, delta learning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from w2s_jax.data.tokenizers import Tokenizer
from w2s_jax.sampling.sampler import Sampler, SamplingConfig, left_pad


def sample_completions(
  graphdef: Any,
  params: Any,
  tokenizer: Tokenizer,
  prompts: Sequence[str],
  *,
  n: int,
  max_new_tokens: int,
  temperature: float = 1.0,
  seed: int = 0,
  batch_rows: int = 64,
) -> list[list[str]]:
  """`n` sampled completions of every prompt (text up to, not including, the first EOS; padding and ids
  outside the tokenizer's vocabulary are dropped).

  Each prompt is tokenized as the SFT data are (`[BOS] + prompt`), so a model trained by the `sft` task
  continues with a solution. Rows are decoded `batch_rows` at a time, all left-padded to the longest
  prompt, so the sampler compiles once.

  Returns:
    completions[i] = the n completions of prompts[i].
  """
  if n < 1 or not prompts:
    raise ValueError(f"need n >= 1 and at least one prompt, got n={n} and {len(prompts)} prompts")
  ids = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts for _ in range(n)]
  tokens_RP, mask_RP = left_pad(ids, pad_id=tokenizer.pad_id)
  cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                       stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
  sampler = Sampler(graphdef, cfg)
  texts: list[str] = []
  for start in range(0, len(ids), batch_rows):
    chunk = slice(start, start + batch_rows)
    t_BP, m_BP = tokens_RP[chunk], mask_RP[chunk]
    real = len(t_BP)
    if real < batch_rows:  # pad the last chunk with copies of its first row: one compiled shape
      t_BP = np.concatenate([t_BP, np.repeat(t_BP[:1], batch_rows - real, 0)])
      m_BP = np.concatenate([m_BP, np.repeat(m_BP[:1], batch_rows - real, 0)])
    out = sampler(params, t_BP, m_BP, jax.random.fold_in(jax.random.key(seed), start))
    completions_BN = np.asarray(out.completions_BN)[:real]
    for row in completions_BN.tolist():
      if tokenizer.eos_id in row:
        row = row[: row.index(tokenizer.eos_id)]
      # Padding and ids past the tokenizer's vocabulary (a model's vocab may be larger) carry no text.
      texts.append(tokenizer.decode([t for t in row if t != tokenizer.pad_id and t < tokenizer.vocab_size]))
  return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
