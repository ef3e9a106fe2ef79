"""Instruction examples -> token ids and labels, through a chat template.

A row is a conversation, given either as chat ``messages`` (``[{"role", "content"}, ...]`` with roles
``system``, ``user`` and ``assistant``) or as a ``prompt`` and a ``response`` (`prompt_response_messages`
makes them a user and an assistant turn). Both shapes go through the same chat template: the
tokenizer's own when it has one (``tokenizer.chat_template``), otherwise `DEFAULT_CHAT_TEMPLATE`, which
lmforge then stores with the run's tokenizer so that export and generation format prompts the same way.

How a conversation becomes tokens (`encode_conversation`):

1. The template renders the conversation cut before each assistant turn (with the generation prompt) and
   cut after it; the text between the two is that turn's response. A template that does not render a
   conversation as a prefix of its continuation is refused (`ChatTemplateError`).
2. The pieces (prompt text, response, prompt text, response, ...) are tokenized one by one without
   special tokens added by the tokenizer, so that a prompt is tokenized the same way in training and in
   generation (`encode_prompt`).
3. Response tokens carry their ids as labels, every other token -100. Every response ends with the
   end-of-text token (EOS): the default template writes it; for a template whose assistant turn has no
   EOS it is appended, and tokens a template writes after the EOS (a newline) get -100.

Example, default template, an lmforge BPE tokenizer (``<|endoftext|>`` is both BOS and EOS)::

    <|endoftext|>### Instruction:\\nWhat is 3 plus 4?\\n\\n### Response: 7<|endoftext|>
    -100 ...                                                -100     " 7" <|endoftext|>

The loss of a causal LM shifts inside the model, so the label of a token is what the position before it
must predict: the prompt's last token learns to predict the response's first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
Message = dict[str, str]
#: What to do with an example longer than the length limit: keep its first tokens, leave it out, or stop.
LongExamples = Literal["truncate", "drop", "error"]

#: lmforge's chat template, for tokenizers that have none (an Alpaca-style layout). ``bos_token`` opens the
#: conversation, each assistant turn ends with ``eos_token``; the generation prompt is ``### Response:``.
#: The response follows a space, not a newline, so that its first word is tokenized as words in running text
#: are: byte-level BPE vocabularies hold a word with its leading space (" heart"), and a small one trained on
#: a small corpus has few words without it. After a newline the first word of every answer came apart into
#: rare pieces ("the" -> "t", "he") that match none of the prompt's tokens: with it, full fine-tuning of the
#: quickstart model reached 0.145 exact match on the bundled set in 3,000 steps, with the space 0.25 (and the
#: copy-a-word task 4/16 -> 11/16; docs/finetuning.md).
DEFAULT_CHAT_TEMPLATE = r"""{{- bos_token if bos_token else '' -}}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{{- message['content'] + '\n\n' -}}
{%- elif message['role'] == 'user' -%}
{{- '### Instruction:\n' + message['content'] + '\n\n' -}}
{%- elif message['role'] == 'assistant' -%}
{{- '### Response: ' + message['content'] + eos_token -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '### Response:' -}}
{%- endif -%}"""

#: ``chat_template`` value that asks for `DEFAULT_CHAT_TEMPLATE` even when the tokenizer has a template.
DEFAULT_TEMPLATE_NAME = "default"


class ChatTemplateError(ValueError):
    """A chat template that cannot be used to find the response tokens of a conversation."""


@dataclass
class EncodedConversation:
    """A tokenized conversation.

    Attributes:
        input_ids: Token ids.
        labels: The id of each response token, -100 elsewhere (same length as ``input_ids``).
    """

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_response_messages(prompt: str, response: str, system: str | None = None) -> list[Message]:
    """A prompt and its response as chat messages: an optional system turn, a user and an assistant turn."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def message_problem(messages: Any) -> str | None:
    """Why ``messages`` cannot be trained on, or None when they can.

    They must be a list of ``{"role", "content"}`` objects with a known role and string content, with at
    least one assistant turn and no empty one (an empty response would teach the model to stop at once).
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        return f"messages must be a non-empty list of {{role, content}} objects, got {_short(messages)}"
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"message {position} must be an object with role and content, got {_short(message)}"
        if message["role"] not in ROLES:
            return f"message {position} has role {message['role']!r}; roles must be one of {list(ROLES)}"
        if not isinstance(message["content"], str):
            return f"message {position} ({message['role']}) must have text content, got {_short(message['content'])}"
        if message["role"] == "assistant" and not message["content"].strip():
            return f"message {position} is an empty assistant turn; every response needs text"
    if not any(m["role"] == "assistant" for m in messages):
        return "the conversation has no assistant turn, so nothing to learn from"
    return None


def chat_template_for(tokenizer: PreTrainedTokenizerBase, template: str | None = None) -> str:
    """The chat template to format with: ``template`` if given (``"default"`` names
    `DEFAULT_CHAT_TEMPLATE`), else the tokenizer's own, else `DEFAULT_CHAT_TEMPLATE`."""
    if template == DEFAULT_TEMPLATE_NAME:
        return DEFAULT_CHAT_TEMPLATE
    if template is not None:
        return template
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    if isinstance(own, dict) and "default" in own:  # a tokenizer with several named templates
        return own["default"]
    return DEFAULT_CHAT_TEMPLATE


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], template: str,
           add_generation_prompt: bool = False) -> str:
    """The text of ``messages`` in ``template`` (``apply_chat_template`` without tokenizing)."""
    return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def conversation_pieces(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], template: str,
                        add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """The rendered conversation cut into ``(text, is_response)`` pieces that join into the whole text.

    Raises:
        ChatTemplateError: The template renders a conversation so that its beginning changes when a turn
            is added, which leaves no way to tell the response text apart.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""  # the text of the conversation through the last assistant turn handled
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:position], template, add_generation_prompt=True)
        through = render(tokenizer, messages[: position + 1], template)
        if not before.startswith(done) or not through.startswith(before):
            raise ChatTemplateError(
                "data.chat_template: the chat template must render a conversation as the beginning of its "
                f"continuation (turn {position}: {_short(through, 120)} does not continue "
                f"{_short(before, 120)}), so that the response tokens can be found. Use a template that "
                f"does, e.g. data.chat_template: {DEFAULT_TEMPLATE_NAME}."
            )
        pieces += [(before[len(done):], False), (through[len(before):], True)]
        done = through
    whole = render(tokenizer, messages, template, add_generation_prompt=add_generation_prompt)
    if not whole.startswith(done):
        raise ChatTemplateError(
            "data.chat_template: the chat template renders the whole conversation differently from its turns; "
            f"use a template that renders each turn as a continuation, e.g. data.chat_template: "
            f"{DEFAULT_TEMPLATE_NAME}."
        )
    pieces.append((whole[len(done):], False))
    return [(text, response) for text, response in pieces if text]


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], template: str,
                        add_generation_prompt: bool = False) -> EncodedConversation:
    """Token ids of ``messages`` with labels on the response tokens only (see the module docstring).

    Args:
        template: A Jinja chat template (`chat_template_for`).
        add_generation_prompt: End with the template's generation prompt (a conversation to be
            continued by the model; `encode_prompt`).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("data.tokenizer: instruction tuning needs a tokenizer with an end-of-text (eos) token, "
                         "which ends every response; set eos_token in its tokenizer_config.json.")
    pieces = conversation_pieces(tokenizer, messages, template, add_generation_prompt)
    encoded = tokenizer([text for text, _ in pieces], add_special_tokens=False, return_attention_mask=False,
                        verbose=False)["input_ids"]
    input_ids: list[int] = []
    labels: list[int] = []
    for (_, is_response), ids in zip(pieces, encoded):
        ids = list(ids)
        if not is_response:
            input_ids += ids
            labels += [IGNORE_INDEX] * len(ids)
            continue
        if eos not in ids:
            ids.append(eos)
        end = ids.index(eos) + 1  # through the response's EOS; what the template writes after it is context
        input_ids += ids
        labels += ids[:end] + [IGNORE_INDEX] * (len(ids) - end)
    return EncodedConversation(input_ids, labels)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], template: str) -> list[int]:
    """The token ids a model continues to answer ``messages`` (which end with a user turn): the
    conversation and the template's generation prompt, tokenized exactly as in training."""
    return encode_conversation(tokenizer, messages, template, add_generation_prompt=True).input_ids


def truncate(example: EncodedConversation, max_length: int) -> EncodedConversation | None:
    """The first ``max_length`` tokens of ``example``; None when no response token is left in them."""
    cut = EncodedConversation(example.input_ids[:max_length], example.labels[:max_length])
    return cut if any(label != IGNORE_INDEX for label in cut.labels) else None



def exact_match(generated: str, reference: str) -> bool:
    """Whether a generated response is the reference answer, surrounding whitespace aside."""
    return generated.strip() == reference.strip()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
