"""Real offline text that ships with Python: the language reference topics of `pydoc_data`.

`pydoc_data.topics` holds the text of the Python reference manual's ~80 help topics (~460 KB of
English). It is the SFT smoke corpus until the data issue brings reasoning-gym tasks: each paragraph
becomes an example whose prompt names the topic and whose response is the paragraph.
"""

from __future__ import annotations

import zlib
from pydoc_data.topics import topics


def python_reference_examples(
  split: str, *, eval_frac: float = 0.05, max_chars: int = 600
) -> list[tuple[str, str]]:
  """(prompt, response) pairs from the Python reference topics.

  Args:
    split: "train" or "eval"; topics are assigned to a split by a stable hash of their name.
    eval_frac: share of topics held out for "eval".
    max_chars: paragraphs longer than this are cut at a word boundary.

  Returns:
    A list of (prompt, response) strings.
  """
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  out = []
  for name in sorted(topics):
    held_out = (zlib.crc32(name.encode()) % 10_000) < eval_frac * 10_000
    if held_out != (split == "eval"):
      continue
    for para in topics[name].split("\n\n"):
      para = " ".join(para.split())
      if len(para) < 40:
        continue
      if len(para) > max_chars:
        para = para[:max_chars].rsplit(" ", 1)[0]
      out.append((f"Python reference, topic '{name}':\n", para))
  return out
