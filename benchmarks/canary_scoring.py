"""How fast candidate secrets are scored, so how large a canary space can be ranked exactly.

The Secret Sharer's exact exposure scores every candidate secret (``10 ** digits`` of them) by its
log-perplexity under the model. This times `log_perplexities` on the quickstart-sized GPT-2 (2 layers,
128 wide, from a config) with a byte-level BPE tokenizer trained on the bundled corpus, for a few batch
sizes, and prints the time an exact ranking of 10^4, 10^5 and 10^6 candidates would take.

    python benchmarks/canary_scoring.py [--threads 2] [--candidates 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmforge.core.files import bundled_data_dir
from lmforge.plugins.privacy.canaries import CanaryFormat, log_perplexities


def quickstart_sized_model():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    documents = (bundled_data_dir() / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(documents, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=128, n_head=4, n_positions=128,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = quickstart_sized_model()
    fmt = CanaryFormat(digits=6)
    texts = [fmt.render(s) for s in range(args.candidates)]
    length = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"]) + 1
    print(f"{args.candidates} candidates of {fmt.template!r}, {length} tokens each, {args.threads} threads")
    for batch_size in (64, 256, 1024):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            log_perplexities(model, tokenizer, texts, batch_size, context_token_id=tokenizer.eos_token_id)
            times.append(time.perf_counter() - t0)
        rate = args.candidates / statistics.median(times)
        print(f"batch {batch_size:>5}: {rate:>9.0f} candidates/s; exact ranking of 10^4: {1e4 / rate:6.1f} s, "
              f"10^5: {1e5 / rate:7.1f} s, 10^6: {1e6 / rate:8.1f} s")


if __name__ == "__main__":
    main()
