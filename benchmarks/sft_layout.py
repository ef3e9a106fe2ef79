"""Instruction tuning throughput: packed blocks vs padded, length-grouped batches, on the bundled set.

Lays out the bundled instruction set (lmforge:instructions/train.jsonl) both ways with `InstructionData`
and trains a small GPT-2 (a fresh one per layout and repeat, same seed) in a plain PyTorch loop: forward
with `lmforge.core.data.instruction_layout.model_inputs`, backward, AdamW step. Both layouts see about the same
number of examples per step: packed batches hold ``--blocks`` blocks of ``--max-length`` tokens, padded
batches as many examples as a packed batch holds on average. Each measurement trains ``--steps`` steps of
one layout; the layouts alternate (A B A B ...), and the script prints each layout's median examples/s and
the median over repeats of the packed/padded ratio of examples/s.

    python benchmarks/sft_layout.py                      # about 3 minutes on 2 CPU cores
    python benchmarks/sft_layout.py --max-length 512 --blocks 2 --attn eager
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(layout: str, args: argparse.Namespace, cache: str, examples_per_batch: int | None):
    from lmforge.core.data.instruction_data import InstructionData
    from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

    batch_size = args.blocks if layout == "packed" else examples_per_batch
    data = InstructionData(train="lmforge:instructions/train.jsonl", val="lmforge:instructions/val.jsonl",
                           tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=args.vocab)),
                           max_length=args.max_length, layout=layout, batch_size=batch_size, cache_dir=cache, seed=0)
    data.setup("fit")
    return data


def run(data, args: argparse.Namespace) -> tuple[float, int, float]:
    """Seconds for ``args.steps`` training steps, examples trained on, and the share of padding tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.core.data.instruction_layout import model_inputs

    tok = data.tokenizer
    config = AutoConfig.for_model("gpt2", n_layer=args.layers, n_embd=args.width, n_head=4,
                                  n_positions=args.max_length, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=args.attn).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = data.train_dataloader()
    dataset, size = data.datasets["train"], loader.batch_size
    order = list(loader.sampler)  # the rows of each batch, in the loader's order (the same seeded epoch)
    batches = []
    for i, batch in enumerate(loader):  # collated before timing: the loader is not what is compared
        rows = order[i * size:(i + 1) * size]
        examples = sum(len(dataset.blocks[r]) for r in rows) if data.layout == "packed" else len(rows)
        tokens = sum(dataset.lengths[r] for r in rows)
        batches.append((batch, examples, tokens))
        if len(batches) == args.steps + 2:
            break
    examples = tokens = slots = 0
    for i, (batch, n_examples, n_tokens) in enumerate(batches):
        if i == 2:  # after two warm-up steps
            start = time.perf_counter()
        loss = model(**model_inputs(batch), labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            examples, tokens, slots = examples + n_examples, tokens + n_tokens, slots + batch["input_ids"].numel()
    return time.perf_counter() - start, examples, 1 - tokens / slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=128, help="data.max_length (packed block length)")
    parser.add_argument("--blocks", type=int, default=8, help="packed blocks per batch")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (a tiny model runs steadier on one thread of a shared machine)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import datasets
    import torch

    torch.set_num_threads(args.threads)

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        packed = build("packed", args, cache, None)
        blocks = packed.datasets["train"]
        per_block = len(blocks.examples) / len(blocks)
        per_batch = max(1, round(per_block * args.blocks))
        padded = build("padded", args, cache, per_batch)
        print(f"bundled set: {len(blocks.examples)} training examples, {per_block:.2f} per packed block of "
              f"{args.max_length}; packed batches of {args.blocks} blocks vs padded batches of {per_batch} "
              f"examples; gpt2 {args.layers}x{args.width}, {args.attn}, {torch.get_num_threads()} threads")
        rates: dict[str, list[float]] = {"packed": [], "padded": []}
        pads: dict[str, list[float]] = {"packed": [], "padded": []}
        for _ in range(args.repeats):
            for name, data in (("packed", packed), ("padded", padded)):
                seconds, examples, padding = run(data, args)
                rates[name].append(examples / seconds)
                pads[name].append(padding)
    ratios = [a / b for a, b in zip(rates["packed"], rates["padded"])]
    for name in rates:
        print(f"  {name:<7} {statistics.median(rates[name]):8.1f} examples/s   padding "
              f"{100 * statistics.median(pads[name]):4.1f}% of token slots   (runs: "
              f"{', '.join(f'{r:.0f}' for r in rates[name])})")
    print(f"  packed / padded examples/s: median ratio {statistics.median(ratios):.2f} "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
