"""Render a GGUF chat template the way llama.cpp does, special tokens included.

Source: llama.cpp ``common/chat.cpp`` (``common_chat_templates_init`` and
``common_chat_template_direct_apply_impl``): ``bos_token`` / ``eos_token`` are the tokens' text
(``common_token_to_piece(..., special=true)``, e.g. ``<s>``, never an empty string); when the
vocabulary adds BOS itself (``add_bos``) a BOS the template rendered at the start is cut, and
likewise a trailing EOS when it adds EOS; the prompt is then tokenized with special tokens
parsed and BOS/EOS added as the vocabulary says. A GGUF without a template gets llama.cpp's
ChatML default.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantswarm.engine.base import Message

# llama.cpp's CHATML_TEMPLATE_SRC, used when a GGUF carries no chat template
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class SpecialTokens:
    """A vocabulary's BOS/EOS text and whether its tokenizer adds them (GGUF ``tokenizer.ggml.add_*_token``)."""

    bos: str
    eos: str
    add_bos: bool
    add_eos: bool

    @classmethod
    def of(cls, llm) -> SpecialTokens:
        """Read from a loaded ``llama_cpp.Llama`` (a token id of -1 has no text, as in llama.cpp)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(llm.model)

        def text(token: int) -> str:
            return llm.detokenize([token], special=True).decode(errors="replace") if token >= 0 else ""

        return cls(text(llm.token_bos()), text(llm.token_eos()),
                   bool(llama_cpp.llama_vocab_get_add_bos(vocab)), bool(llama_cpp.llama_vocab_get_add_eos(vocab)))


def render_chat_template(template: str | None, messages: list[Message], special: SpecialTokens,
                         add_generation_prompt: bool = True) -> str:
    """The prompt text llama.cpp makes from ``messages`` (what llama-server's ``/apply-template`` returns).

    Tokenize it with ``add_bos=special.add_bos`` and special tokens parsed to get llama.cpp's tokens.
    Raises jinja2's TemplateError for a template that does not render.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    fmt = Jinja2ChatFormatter(template or CHATML_TEMPLATE, eos_token=special.eos, bos_token=special.bos,
                              add_generation_prompt=add_generation_prompt)
    text = fmt(messages=messages).prompt
    if special.add_bos and special.bos and text.startswith(special.bos):
        text = text[len(special.bos):]
    if special.add_eos and special.eos and text.endswith(special.eos):
        text = text[: -len(special.eos)]
    return text
