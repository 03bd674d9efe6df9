"""Prompts through a checkpoint's chat template, with the loss on the assistant turn only.

`data.chat_template` picks the template: "" (off: the plain `Question: …\\nSolution:\\n` prompt),
`"tokenizer"` (the tokenizer's own, e.g. SmolLM2's from its GGUF or a `tokenizer_config.json`), a key of
`tokenizers.CHAT_TEMPLATES`, or a Jinja string. The question is the user turn; the worked solution is the
assistant turn.

`render_pair` splits the rendered conversation into the prompt (everything up to and including the
assistant header, i.e. the generation prompt) and the response (the assistant's content). SFT packing
puts the loss on the response and its EOS only, so the mask covers exactly the assistant turn; RL samples
after the same prompt and stops at the tokenizer's EOS (the template's end of turn). The template's own
BOS text at the start and end-of-turn text at the end are cut, because packing and the sampler add the
BOS and EOS ids themselves.
"""

from __future__ import annotations

from typing import Any

from w2s_jax.data.tokenizers import CHAT_TEMPLATES, render_chat


def resolve_template(spec: str, tokenizer: Any, key: str = "data.chat_template") -> str | None:
  """The Jinja template `spec` names for `tokenizer` (None when `spec` is "")."""
  if not spec:
    return None
  if spec == "tokenizer":
    template = getattr(tokenizer, "chat_template", None)
    if not template:
      raise ValueError(f"{key}='tokenizer' but the tokenizer ({type(tokenizer).__name__}) has no chat "
                       f"template: name one of {sorted(CHAT_TEMPLATES)} or give a Jinja string")
    return template
  return CHAT_TEMPLATES.get(spec, spec)


def _tokens(tokenizer: Any) -> dict[str, str]:
  return dict(getattr(tokenizer, "_template_tokens", {}))


def render_prompt(template: str, tokenizer: Any, question: str) -> str:
  """The prompt text of a one-turn conversation (generation prompt included, leading BOS text cut)."""
  tokens = _tokens(tokenizer)
  text = render_chat(template, [{"role": "user", "content": question}], add_generation_prompt=True, **tokens)
  bos = tokens.get("bos_token") or ""
  return text[len(bos):] if bos and text.startswith(bos) else text


def render_pair(template: str, tokenizer: Any, question: str, answer: str) -> tuple[str, str]:
  """(prompt, response) texts of a user question and the assistant's answer.

  Raises:
    ValueError: the template renders the conversation so that it does not start with the prompt (then
      the assistant turn cannot be told apart; the message shows both texts).
  """
  tokens = _tokens(tokenizer)
  messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
  full = render_chat(template, messages, add_generation_prompt=False, **tokens)
  bos = tokens.get("bos_token") or ""
  full = full[len(bos):] if bos and full.startswith(bos) else full
  prompt = render_prompt(template, tokenizer, question)
  if not full.startswith(prompt):
    raise ValueError(f"the chat template's conversation {full[:200]!r} does not start with its generation "
                     f"prompt {prompt[:200]!r}: cannot mask the assistant turn")
  response = full[len(prompt):].rstrip()
  eos = tokens.get("eos_token") or ""
  if eos and response.endswith(eos):
    response = response[:-len(eos)]
  return prompt, response
