"""The tokenizer a pretrained checkpoint carries: HF `tokenizer.json`, special tokens, chat template.

It lives beside `convert` because a checkpoint's tokenizer is part of the checkpoint: `load_hf` and
`load_gguf` return one, and `models` imports nothing above itself. `w2s_jax.data.tokenizers` re-exports
`HFTokenizer`, `CHAT_TEMPLATES` and `render_chat`, so data code and users keep reading them from there.

- `HFTokenizer`: a `tokenizer.json` (Llama 3, Qwen, SmolLM2 …) through the `tokenizers` package; special
  tokens and the chat template come from `tokenizer_config.json` beside it when present. `encode` adds no
  special tokens (packing adds BOS/EOS), `decode` drops them, a missing pad (or BOS) token falls back to EOS.
- `checkpoint_tokenizer(folder, hf_config)`: a checkpoint folder's tokenizer, with `config.json`'s special
  ids as the fallback (what `load_hf` returns).

Chat templates are Jinja (as in HF `tokenizer_config.json`); `CHAT_TEMPLATES` has ChatML (Qwen, SmolLM2)
and Gemma's for tokenizers whose files carry none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CHAT_TEMPLATES = {
  "chatml": (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
  ),
  "gemma": (
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
  ),
}


def render_chat(template: str, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
                **extra: Any) -> str:
  """Renders a Jinja chat template (HF `tokenizer_config.json` style) over `messages`."""
  import jinja2

  # The environment transformers' `apply_chat_template` renders with, so the texts are the same.
  env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  return env.from_string(template).render(
    messages=list(messages), add_generation_prompt=add_generation_prompt, **extra)


def resolve_template(chat_template: str | None) -> str | None:
  """A `CHAT_TEMPLATES` key's template, a Jinja string unchanged, or None."""
  return CHAT_TEMPLATES.get(chat_template, chat_template) if chat_template else None


class ChatTemplateMixin:
  """`apply_chat_template` for a tokenizer holding `chat_template` (Jinja text or None)."""

  chat_template: str | None = None

  def apply_chat_template(
    self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
  ) -> str:
    """The chat prompt text for `messages` (dicts with `role` and `content`)."""
    if self.chat_template is None:
      raise ValueError(f"{type(self).__name__} has no chat template: pass chat_template= (a Jinja string or "
                       f"one of {sorted(CHAT_TEMPLATES)})")
    return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                       **getattr(self, "_template_tokens", {}))


_SPECIAL_FALLBACKS = {
  "bos": ("<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>", "<|im_start|>"),
  "eos": ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", "<|im_end|>"),
}


class HFTokenizer(ChatTemplateMixin):
  """A HF `tokenizer.json` through the `tokenizers` package.

  Special tokens are, in order: the arguments, `tokenizer_config.json` beside the file (`bos_token`,
  `eos_token`, `pad_token`, `chat_template`), common names (`<s>`, `<|endoftext|>` …). A missing pad
  token falls back to EOS.

  Args:
    path: the `tokenizer.json` file or the folder holding it.
    bos_token, eos_token, pad_token: override the special tokens by their text.
    chat_template: a Jinja template or a key of `CHAT_TEMPLATES`; overrides the config's.
  """

  def __init__(self, path: str | Path, *, bos_token: str | None = None, eos_token: str | None = None,
               pad_token: str | None = None, chat_template: str | None = None):
    from tokenizers import Tokenizer as RawTokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    self.path = str(file)
    self.tok = RawTokenizer.from_file(self.path)
    self.vocab_size = int(self.tok.get_vocab_size(with_added_tokens=True))
    config_file = file.parent / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}

    def token(kind: str, given: str | None) -> str | None:
      value = given or config.get(f"{kind}_token")
      if isinstance(value, dict):  # {"content": "<s>", ...} in older configs
        value = value.get("content")
      if value is None and kind in _SPECIAL_FALLBACKS:
        value = next((t for t in _SPECIAL_FALLBACKS[kind] if self.tok.token_to_id(t) is not None), None)
      return value

    ids = {}
    for kind, given in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
      text = token(kind, given)
      ids[kind] = self.tok.token_to_id(text) if text is not None else None
      if text is not None and ids[kind] is None:
        raise ValueError(f"{self.path}: {kind} token {text!r} is not in the vocabulary")
    if ids["eos"] is None:
      raise ValueError(f"{self.path}: no EOS token found; pass eos_token=")
    self.eos_id = int(ids["eos"])
    self.bos_id = int(ids["bos"]) if ids["bos"] is not None else self.eos_id
    self.pad_id = int(ids["pad"]) if ids["pad"] is not None else self.eos_id
    self.chat_template = resolve_template(chat_template) or config.get("chat_template")
    self._template_tokens = {"bos_token": self.tok.id_to_token(self.bos_id),
                             "eos_token": self.tok.id_to_token(self.eos_id)}

  @classmethod
  def from_tokenizer(cls, raw: Any, *, eos_id: int, bos_id: int | None = None, pad_id: int | None = None,
                     chat_template: str | None = None, source: str = "<in memory>") -> HFTokenizer:
    """Wraps an already built `tokenizers.Tokenizer` whose special ids are known (checkpoint loaders).

    A missing BOS or pad id falls back to EOS, as in the constructor.
    """
    self = cls.__new__(cls)
    self.path, self.tok = source, raw
    self.vocab_size = int(raw.get_vocab_size(with_added_tokens=True))
    self.eos_id = int(eos_id)
    self.bos_id = self.eos_id if bos_id is None else int(bos_id)
    self.pad_id = self.eos_id if pad_id is None else int(pad_id)
    self.chat_template = resolve_template(chat_template)
    self._template_tokens = {"bos_token": raw.id_to_token(self.bos_id) or "",
                             "eos_token": raw.id_to_token(self.eos_id) or ""}
    return self

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS/EOS (special-token strings in the text stay whole)."""
    return list(self.tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    """Text of `ids`; special tokens are dropped unless `skip_special_tokens=False`."""
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self.tok.token_to_id(token)


def _special_id(tok: Any, value: Any) -> int | None:
  """Id of a tokenizer_config.json special-token entry (a string or an AddedToken dict)."""
  if isinstance(value, dict):
    value = value.get("content")
  return tok.token_to_id(value) if isinstance(value, str) else None


def checkpoint_tokenizer(path: str, hf: Mapping[str, Any]) -> HFTokenizer | None:
  """A checkpoint folder's `tokenizer.json` (+ tokenizer_config.json), or None when there is none.

  Args:
    path: the checkpoint folder.
    hf: its parsed `config.json`; its `*_token_id` entries are the fallback for special tokens that
      tokenizer_config.json does not name.

  Raises:
    ValueError: naming the folder, when neither file gives an EOS token.
  """
  file = os.path.join(path, "tokenizer.json")
  if not os.path.exists(file):
    return None
  import tokenizers

  tok = tokenizers.Tokenizer.from_file(file)
  tcfg: dict[str, Any] = {}
  if os.path.exists(os.path.join(path, "tokenizer_config.json")):
    with open(os.path.join(path, "tokenizer_config.json")) as f:
      tcfg = json.load(f)
  template = tcfg.get("chat_template")
  if template is None and os.path.exists(os.path.join(path, "chat_template.jinja")):
    with open(os.path.join(path, "chat_template.jinja")) as f:
      template = f.read()

  def special(key: str) -> int | None:  # tokenizer_config.json first, then config.json's id
    value = _special_id(tok, tcfg.get(f"{key}_token"))
    if value is None:
      value = hf.get(f"{key}_token_id")
      value = value[0] if isinstance(value, list) and value else value  # Llama 3 lists several eos
    return None if value is None else int(value)

  ids = {key: special(key) for key in ("bos", "eos", "pad")}
  if ids["eos"] is None:
    raise ValueError(f"{path}: no eos token in tokenizer_config.json or config.json.")
  return HFTokenizer.from_tokenizer(tok, bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"],
                                    chat_template=template, source=file)
