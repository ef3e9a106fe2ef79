"""generate_responses: batched, left-padded greedy answers equal a plain one-prompt-at-a-time argmax loop, stop at
EOS, and format prompts with the chat template as training does."""

from __future__ import annotations


import pytest
import torch
from sft_fixtures import make_base
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.core.data.instruction import DEFAULT_CHAT_TEMPLATE, encode_prompt
from lmforge.core.generation import generate_responses, prompt_and_reference

QUESTIONS = ["What is 3 plus 4?", "Sort these words alphabetically: pears apples", "Count the words: a b c d e f",
             "Uppercase: tea", "Compute 12 - 5."]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_and_tokenizer(request, tmp_path_factory: pytest.TempPathFactory):
    base = make_base(tmp_path_factory.mktemp(request.param), request.param, seed=1)
    return AutoModelForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base)


def greedy_reference(model, tokenizer, question: str, max_new_tokens: int) -> str:
    """Argmax one token at a time over the whole sequence, no cache, no padding, until EOS."""
    ids = encode_prompt(tokenizer, [{"role": "user", "content": question}], DEFAULT_CHAT_TEMPLATE)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_batched_greedy_answers_equal_one_prompt_at_a_time(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    batched = generate_responses(model, tokenizer, conversations, DEFAULT_CHAT_TEMPLATE, max_new_tokens=12,
                                 batch_size=3)
    assert batched == [greedy_reference(model, tokenizer, q, 12) for q in QUESTIONS]


def test_generation_stops_at_eos(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    # The head's scores are steered: "7", "7", EOS, then "x" forever. Decoding past the EOS would add "x"s.
    seven, x = tokenizer.convert_tokens_to_ids("7"), tokenizer.convert_tokens_to_ids("x")
    steps = iter([seven, seven, tokenizer.eos_token_id] + [x] * 20)

    def steer(module, inputs, output):
        output = output.clone()
        output[:, -1, next(steps)] += 1e4
        return output

    handle = model.get_output_embeddings().register_forward_hook(steer)
    try:
        answers = generate_responses(model, tokenizer, [[{"role": "user", "content": QUESTIONS[0]}]],
                                     DEFAULT_CHAT_TEMPLATE, max_new_tokens=8)
    finally:
        handle.remove()
    assert answers == ["77"]


def test_a_prompt_too_long_for_the_positions_is_refused(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="leaves no room for a response"):
        generate_responses(model, tokenizer, [[{"role": "user", "content": "word " * 200}]], DEFAULT_CHAT_TEMPLATE)


def test_prompt_and_reference_split_off_a_final_assistant_turn() -> None:
    user = {"role": "user", "content": "hi"}
    assert prompt_and_reference([user, {"role": "assistant", "content": "hello"}]) == ([user], "hello")
    assert prompt_and_reference([user]) == ([user], None)
