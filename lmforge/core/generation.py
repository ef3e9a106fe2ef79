"""Answering instructions with a causal LM: the conversation through the chat template, then generation.

`generate_responses` formats each conversation exactly as instruction tuning does (the chat template and
its generation prompt, tokenized without added special tokens: `lmforge.core.data.instruction.encode_prompt`),
left-pads prompts of similar length into batches, and lets the model continue them until it writes the
end-of-text token (EOS) or ``max_new_tokens`` run out. Greedy by default; sampling draws from a seeded
generator and leaves the global random state as it was. The ``lmforge generate`` command, the validation
callback `lmforge.runtime.observe.InstructionEval` and benchmarks/sft.py all answer through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lmforge.core.backbone import max_positions
from lmforge.core.data.instruction import Message, encode_prompt


def prompt_and_reference(messages: Sequence[Message]) -> tuple[list[Message], str | None]:
    """A conversation as what to answer and its reference answer: when it ends with an assistant turn, the
    turns before it and that turn's text; otherwise the whole conversation and None."""
    if messages and messages[-1]["role"] == "assistant":
        return list(messages[:-1]), messages[-1]["content"]
    return list(messages), None


@torch.no_grad()
def generate_responses(model: nn.Module, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]],
                       template: str, max_new_tokens: int = 64, batch_size: int = 16, do_sample: bool = False,
                       temperature: float = 1.0, seed: int = 0) -> list[str]:
    """The model's response to each conversation (which must end with a user turn), as text.

    Args:
        model: An HF causal LM (``generate``), in eval mode.
        template: The chat template the model was tuned with.
        max_new_tokens: Tokens generated per response at most (fewer when the model's positions run out).
        batch_size: Prompts generated together.
        do_sample: Sample instead of taking the most likely token.
        temperature: Sampling temperature.
        seed: Seed of the sampling.

    Returns:
        One response per conversation, in order: the generated tokens up to the first EOS, decoded without
        special tokens and stripped of surrounding whitespace.

    Raises:
        ValueError: A prompt leaves no room for a new token in the model's positions.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"generate: max_new_tokens and batch_size must be at least 1, got {max_new_tokens} and "
                         f"{batch_size}.")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = [encode_prompt(tokenizer, conversation, template) for conversation in conversations]
    limit = max_positions(model.config)
    device = next(model.parameters()).device
    responses = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        T = max(len(prompts[i]) for i in rows)
        new_tokens = max_new_tokens if limit is None else min(max_new_tokens, limit - T)
        if new_tokens < 1:
            raise ValueError(f"generate: a prompt of {T} tokens leaves no room for a response in the model's {limit} "
                             "positions; shorten it.")
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
        for b, i in enumerate(rows):  # left padding: every prompt ends where generation starts
            input_ids[b, T - len(prompts[i]):] = torch.as_tensor(prompts[i])
            attention_mask[b, T - len(prompts[i]):] = 1
        sampling = {"do_sample": True, "temperature": temperature, "top_k": None, "top_p": None} if do_sample \
            else {"do_sample": False}
        with _seeded(seed + start, device), one_cpu_thread(device, len(rows)):
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=pad, **sampling)
        for b, i in enumerate(rows):
            ids = out[b, T:].tolist()
            ids = ids[: ids.index(eos)] if eos in ids else ids
            responses[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return responses


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """A seeded global generator inside the block, and the caller's random state restored after it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def one_cpu_thread(device: torch.device, rows: int = 1) -> Iterator[None]:
    """Decode a single row on one CPU thread (more rows, or another device: as configured).

    A one-row matmul is too small to split: with several intra-op threads each op waits on a thread barrier, and
    on a busy machine that made decoding 50 times slower (3 s instead of 0.06 s for 16 tokens of a tiny GPT-2 on
    2 shared cores).
    """
    if device.type != "cpu" or rows > 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
