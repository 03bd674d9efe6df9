"""Clear length limits: text longer than a configured length is an error naming the key to raise.

SFT examples (`check_examples`) and RL prompts (`rl.rollout.encode_prompts`) are measured in tokens
before anything trains. Too-long text is either an error (`LengthLimitError`: the key, its value, the
longest text seen and how many are over) or, when the config asks for it (`data.overlong='drop'`,
`data.long_prompts='skip'`), skipped and counted — and still an error when what is left cannot fill a
batch, instead of a later "only 0 packed rows".
"""

from __future__ import annotations

from collections.abc import Sequence

from w2s_jax.data.tokenizers import Tokenizer


class LengthLimitError(ValueError):
  """Text longer than a configured length.

  Attributes:
    key: the config key to raise (e.g. `data.seq_len`, `sft.seq_len`, `data.max_prompt_len`).
    limit: its value.
    longest: tokens the longest text needs.
    too_long: how many texts exceed `limit`, of `total`.
    what: what was measured ("SFT examples (BOS + prompt + response)", "prompts", …).
    hint: how to skip instead, or why skipping is not enough.
  """

  def __init__(self, key: str, limit: int, longest: int, too_long: int, total: int, what: str,
               hint: str = ""):
    self.key, self.limit, self.longest, self.too_long, self.total = key, limit, longest, too_long, total
    self.what, self.hint = what, hint
    super().__init__(f"{too_long} of {total} {what} need more than {key}={limit} tokens (the longest needs "
                     f"{longest}): raise {key} to at least {longest}" + (f"; {hint}" if hint else ""))

  def renamed(self, key: str) -> LengthLimitError:
    """The same error for a config where the limit is set by `key`."""
    return LengthLimitError(key, self.limit, self.longest, self.too_long, self.total, self.what,
                            self.hint.replace(self.key, key))


def check_model_length(needed: int, max_seq_len: int, what: str,
                       key: str = "model.overrides.max_seq_len") -> None:
  """A ValueError naming `key` when sequences of `needed` tokens (`what`) exceed the model's `max_seq_len`."""
  if needed > max_seq_len:
    raise ValueError(f"{what} need {needed} positions but the model's max_seq_len is {max_seq_len}: raise "
                     f"{key} to at least {needed}")


def packed_rows(lengths: Sequence[int], seq_len: int) -> int:
  """Rows that greedy packing (`packing.pack`) makes of examples of these lengths (all ≤ seq_len)."""
  rows, used = 0, seq_len
  for n in lengths:
    if used + n > seq_len:
      rows, used = rows + 1, 0
    used += n
  return rows


def check_examples(
  pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, seq_len: int, *, overlong: str, batch_size: int,
  split: str, key: str = "data.seq_len", overlong_key: str = "data.overlong",
) -> None:
  """Stops before training when SFT examples do not fit rows of `seq_len` tokens.

  Args:
    pairs: (prompt, response) strings; an example takes 1 + |prompt| + |response| tokens.
    tokenizer: the run's tokenizer.
    seq_len: the row length (`key`).
    overlong: "error" (any too-long example is an error), "drop" (skipped and counted; an error only
      when the train split's remaining examples fill fewer than `batch_size` rows, or none of a split's
      fit) or "truncate" (nothing checked).
    batch_size: rows per batch.
    split: "train" or "eval" (named in the error).
    key, overlong_key: the config keys named in errors.

  Raises:
    LengthLimitError: see `overlong`.
  """
  if overlong == "truncate" or not pairs:
    return
  if overlong not in ("error", "drop"):
    raise ValueError(f"{overlong_key} must be 'truncate', 'drop' or 'error', got {overlong!r}")
  lengths = [1 + len(tokenizer.encode(p)) + len(tokenizer.encode(r)) for p, r in pairs]
  fit = [n for n in lengths if n <= seq_len]
  over = len(lengths) - len(fit)
  if not over:
    return
  what = f"{split} SFT examples (BOS + prompt + response)"
  args = (key, seq_len, max(lengths), over, len(lengths), what)
  if overlong == "error":
    raise LengthLimitError(*args, hint=f"or set {overlong_key}='drop' to skip and count them")
  if not fit:
    raise LengthLimitError(*args, hint="skipping them ('drop') left no example")
  if split == "train" and packed_rows(fit, seq_len) < batch_size:
    raise LengthLimitError(*args, hint=f"skipping them ('drop') left {len(fit)} examples, fewer rows than "
                                       f"a batch of {batch_size}")
