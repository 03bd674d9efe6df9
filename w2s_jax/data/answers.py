"""Answer extraction as a named choice: which part of a completion is its final answer.

| format            | reads                                                        | SFT targets state it as |
|-------------------|--------------------------------------------------------------|-------------------------|
| `answer_line`     | after the last `Answer:` (else GSM8K's `####`) to line end   | `Answer: 42`            |
| `answer_tag`      | in the last `<answer>…</answer>` (reasoning-gym's extractor) | `<answer>42</answer>`   |
| `boxed`           | in the last `\\boxed{…}` (nested braces allowed)             | `\\boxed{42}`           |
| `last_number`     | the last number written anywhere (commas removed)            | `Answer: 42`            |
| `any`             | whichever of `answer_line`, `answer_tag`, `boxed` is last    | `Answer: 42`            |
| `module:function` | a user function `completion -> str or None`                  | `Answer: 42`            |

Every task's default is `answer_line` (`DEFAULT_FORMAT`): the SFT solutions this library writes end with
`Answer: …`. A config picks another with `data.answer_format` (a user task may state its own default);
the SFT targets then state the answer in that format, so SFT and the reward agree. None means no answer
was stated (the format's marker is absent), which is never correct.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from w2s_jax.references import is_reference, resolve_reference

DEFAULT_FORMAT = "answer_line"
ANSWER_PREFIX = "Answer:"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def _after_marker(completion: str) -> tuple[int, str | None]:
  for marker in (ANSWER_PREFIX, "####"):
    at = completion.rfind(marker)
    if at >= 0:
      tail = completion[at + len(marker):].strip()
      return at, tail.splitlines()[0].strip() if tail else ""
  return -1, None


def answer_line(completion: str) -> str | None:
  """Text after the last `Answer:` (or `####`) up to the line's end; "" when nothing follows."""
  return _after_marker(completion)[1]


def _last_tag(completion: str) -> tuple[int, str | None]:
  matches = list(_TAG.finditer(completion))
  return (matches[-1].start(), matches[-1].group(1).strip()) if matches else (-1, None)


def answer_tag(completion: str) -> str | None:
  """Inside the last `<answer>…</answer>`, stripped (as `reasoning_gym.utils.extract_answer`)."""
  return _last_tag(completion)[1]


def _last_boxed(completion: str) -> tuple[int, str | None]:
  start = completion.rfind("\\boxed{")
  if start < 0:
    return -1, None
  depth, i = 1, start + len("\\boxed{")
  for j in range(i, len(completion)):
    depth += {"{": 1, "}": -1}.get(completion[j], 0)
    if depth == 0:
      return start, completion[i:j].strip()
  return -1, None  # unclosed: no answer stated


def boxed(completion: str) -> str | None:
  """Inside the last `\\boxed{…}` (braces balanced), stripped; None if absent or unclosed."""
  return _last_boxed(completion)[1]


def last_number(completion: str) -> str | None:
  """The last number in the completion, commas removed."""
  found = _NUMBER.findall(completion)
  return found[-1].replace(",", "") if found else None


def any_marker(completion: str) -> str | None:
  """The answer of whichever marker (`Answer:`/`####`, `<answer>`, `\\boxed{`) occurs last."""
  found = [f(completion) for f in (_after_marker, _last_tag, _last_boxed)]
  at, answer = max(found, key=lambda x: x[0])
  return answer if at >= 0 else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
  "answer_line": answer_line, "answer_tag": answer_tag, "boxed": boxed, "last_number": last_number,
  "any": any_marker,
}
_STATE = {"answer_tag": "<answer>{}</answer>", "boxed": "\\boxed{{{}}}"}


def check_format(fmt: str, key: str = "data.answer_format") -> str:
  """`fmt` if it names an extractor or a `module:function` reference, else a ValueError naming `key`."""
  if fmt in EXTRACTORS or is_reference(fmt):
    return fmt
  raise ValueError(f"{key}={fmt!r} is not an answer format: use one of {sorted(EXTRACTORS)} or a "
                   "'module:function' reference")


def extractor(fmt: str = "") -> Callable[[str], str | None]:
  """The extraction function of format `fmt` ("" = `DEFAULT_FORMAT`)."""
  fmt = fmt or DEFAULT_FORMAT
  if fmt in EXTRACTORS:
    return EXTRACTORS[fmt]
  return resolve_reference(check_format(fmt), "data.answer_format")


def extract(completion: str, fmt: str = "") -> str | None:
  """The answer `completion` states in format `fmt` (None: none stated)."""
  out = extractor(fmt)(completion)
  if out is not None and not isinstance(out, str):
    raise ValueError(f"answer format {fmt!r} returned {type(out).__name__}, not str or None")
  return out


def state(answer: str, fmt: str = "") -> str:
  """How a solution states `answer` so that format `fmt` reads it back (the SFT target's last line)."""
  return _STATE.get(fmt or DEFAULT_FORMAT, ANSWER_PREFIX + " {}").format(answer)
