"""Instruction formatting: token ids and labels of hand-built conversations, both data shapes, with lmforge's
default chat template and with a tokenizer's own; EOS at the end of every response; bad rows and templates."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmforge.core.data.instruction import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    ChatTemplateError,
    EncodedConversation,
    chat_template_for,
    encode_conversation,
    encode_prompt,
    exact_match,
    message_problem,
    prompt_response_messages,
    truncate,
)

X = IGNORE_INDEX
WORDS = ("### Instruction Response : What is 3 plus 4 ? 7 And 5 12 Be brief . user assistant system ; "
         "<s> <eos> <pad> <|im_start|> <|im_end|> <|end|>").split()
#: A ChatML-style template whose assistant turn ends with <|im_end|> and a newline.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def word_tokenizer(eos: str = "<eos>", chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS (ids are positions in WORDS), so expected ids can be written by hand."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<s>", "<eos>", "<pad>", "<|im_start|>", "<|im_end|>", "<|end|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=eos, pad_token="<pad>",
                                  additional_special_tokens=[s for s in specials if s not in ("<s>", eos, "<pad>")])
    tok.chat_template = chat_template
    return tok


def ids(text: str) -> list[int]:
    """Ids of space-separated words, by hand."""
    return [WORDS.index(w) for w in text.split()]


QUESTION = [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "7"}]
DEFAULT_PROMPT = "<s> ### Instruction : What is 3 plus 4 ? ### Response :"


@pytest.mark.parametrize("shape", ["messages", "prompt_response"])
def test_default_template_labels_only_the_response_and_its_eos(shape: str) -> None:
    tok = word_tokenizer()
    messages = QUESTION if shape == "messages" else prompt_response_messages("What is 3 plus 4?", "7")
    encoded = encode_conversation(tok, messages, chat_template_for(tok))
    assert encoded.input_ids == ids(f"{DEFAULT_PROMPT} 7 <eos>")
    assert encoded.labels == [X] * len(ids(DEFAULT_PROMPT)) + ids("7 <eos>")


def test_default_template_text_is_the_documented_layout() -> None:
    tok = word_tokenizer()
    text = tok.apply_chat_template(QUESTION, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False)
    assert text == "<s>### Instruction:\nWhat is 3 plus 4?\n\n### Response: 7<eos>"
    prompt = tok.apply_chat_template(QUESTION[:1], chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<s>### Instruction:\nWhat is 3 plus 4?\n\n### Response:"


def test_a_system_turn_and_several_responses_each_get_their_labels() -> None:
    tok = word_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION,
                {"role": "user", "content": "And 5?"}, {"role": "assistant", "content": "12"}]
    encoded = encode_conversation(tok, messages, DEFAULT_CHAT_TEMPLATE)
    first = "<s> Be brief . ### Instruction : What is 3 plus 4 ? ### Response :"
    second = "### Instruction : And 5 ? ### Response :"
    assert encoded.input_ids == ids(f"{first} 7 <eos> {second} 12 <eos>")
    assert encoded.labels == [X] * len(ids(first)) + ids("7 <eos>") + [X] * len(ids(second)) + ids("12 <eos>")
    system_shape = prompt_response_messages("What is 3 plus 4?", "7", system="Be brief.")
    assert encode_conversation(tok, system_shape, DEFAULT_CHAT_TEMPLATE).input_ids == ids(f"{first} 7 <eos>")


@pytest.mark.parametrize("shape", ["messages", "prompt_response"])
def test_the_tokenizers_own_template_is_used_and_its_end_of_turn_eos_is_labeled(shape: str) -> None:
    tok = word_tokenizer(eos="<|im_end|>", chat_template=CHATML)
    messages = QUESTION if shape == "messages" else prompt_response_messages("What is 3 plus 4?", "7")
    template = chat_template_for(tok)
    assert template == CHATML
    encoded = encode_conversation(tok, messages, template)
    prompt = "<|im_start|> user What is 3 plus 4 ? <|im_end|> <|im_start|> assistant"
    assert encoded.input_ids == ids(f"{prompt} 7 <|im_end|>")
    assert encoded.labels == [X] * len(ids(prompt)) + ids("7 <|im_end|>")


def test_eos_is_appended_when_the_template_ends_a_turn_without_it() -> None:
    template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}{% if m['role'] == 'assistant' %}"
                " <|end|>{% endif %} ; {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    tok = word_tokenizer(chat_template=template)
    encoded = encode_conversation(tok, QUESTION, chat_template_for(tok))
    prompt = "user : What is 3 plus 4 ? ; assistant :"
    assert encoded.input_ids == ids(f"{prompt} 7 <|end|> ; <eos>")
    # The response piece is "7 <|end|> ; " (up to the end of the conversation): it has no EOS, so one is added
    # and every token of the piece is labeled.
    assert encoded.labels == [X] * len(ids(prompt)) + ids("7 <|end|> ; <eos>")


def test_tokens_a_template_writes_after_the_eos_are_context_not_labels() -> None:
    template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}{% if m['role'] == 'assistant' %}"
                "{{ eos_token }} ;{% endif %} {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    tok = word_tokenizer(chat_template=template)
    encoded = encode_conversation(tok, QUESTION, chat_template_for(tok))
    prompt = "user : What is 3 plus 4 ? assistant :"
    assert encoded.input_ids == ids(f"{prompt} 7 <eos> ;")
    assert encoded.labels == [X] * len(ids(prompt)) + ids("7 <eos>") + [X]


@pytest.mark.parametrize("own", [None, CHATML])
def test_the_generation_prompt_is_tokenized_as_in_training(own: str | None) -> None:
    tok = word_tokenizer(eos="<|im_end|>" if own else "<eos>", chat_template=own)
    template = chat_template_for(tok)
    trained = encode_conversation(tok, QUESTION, template)
    first_label = next(i for i, label in enumerate(trained.labels) if label != X)
    assert encode_prompt(tok, QUESTION[:1], template) == trained.input_ids[:first_label]


def test_chat_template_choice() -> None:
    plain, own = word_tokenizer(), word_tokenizer(chat_template=CHATML)
    assert chat_template_for(plain) == DEFAULT_CHAT_TEMPLATE
    assert chat_template_for(own) == CHATML
    assert chat_template_for(own, "default") == DEFAULT_CHAT_TEMPLATE
    assert chat_template_for(plain, CHATML) == CHATML


def test_a_template_that_rewrites_earlier_turns_is_refused() -> None:
    counting = "{{ messages | length }} {% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(ChatTemplateError, match="data.chat_template"):
        encode_conversation(word_tokenizer(), QUESTION, counting)


def test_a_tokenizer_without_eos_is_refused() -> None:
    tok = word_tokenizer()
    tok.eos_token = None
    with pytest.raises(ValueError, match="end-of-text"):
        encode_conversation(tok, QUESTION, DEFAULT_CHAT_TEMPLATE)


@pytest.mark.parametrize("messages, problem", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "user", "content": "hi"}], "no assistant turn"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}], "empty assistant turn"),
    ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "7"}], "role 'robot'"),
    ([{"role": "user", "content": None}, {"role": "assistant", "content": "7"}], "text content"),
    ([{"role": "user"}, {"role": "assistant", "content": "7"}], "role and content"),
])
def test_message_problems_are_named(messages, problem: str) -> None:
    assert problem in message_problem(messages)


def test_good_messages_have_no_problem() -> None:
    assert message_problem(QUESTION) is None


def test_truncate_keeps_the_first_tokens_or_gives_none_without_a_response_token() -> None:
    example = EncodedConversation([1, 2, 3, 4, 5], [X, X, X, 4, 5])
    assert truncate(example, 4) == EncodedConversation([1, 2, 3, 4], [X, X, X, 4])
    assert truncate(example, 3) is None
    assert truncate(example, 9) == example


def test_exact_match_ignores_surrounding_whitespace_only() -> None:
    assert exact_match(" 7\n", "7")
    assert not exact_match("7.", "7")
    assert not exact_match("the Pacific", "The Pacific")
