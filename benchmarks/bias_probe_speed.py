"""How long BiasProbe takes for 1000 pairs on the CPU, batched vs. one sentence (or masked token) at a time.

Small models of the size the debias recipes train (GPT-2 1x128, BERT 2x128, 1000-token vocabulary);
the bundled 214 pairs repeated to 1000. The unbatched reference runs on 100 pairs and is scaled by 10.
Alternates the two, repeats, and prints medians and the median ratio.

    python benchmarks/bias_probe_speed.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.plugins.bias.probe import read_pairs, score_pairs, shared_positions


def models() -> dict[str, tuple[torch.nn.Module, object]]:
    pairs = read_pairs("lmforge:bias/probe_pairs.csv")
    texts = [s for p in pairs for s in (p.sent_more, p.sent_less)]
    bpe = train_tokenizer(texts, TokenizerTraining(vocab_size=1000, min_frequency=1), "bpe")
    wordpiece = train_tokenizer(texts, TokenizerTraining(vocab_size=1000, min_frequency=1), "wordpiece")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_layer=1, n_embd=128, n_head=4, n_positions=128,
                                      bos_token_id=bpe.bos_token_id, eos_token_id=bpe.eos_token_id))
    bert = BertForMaskedLM(BertConfig(vocab_size=len(wordpiece), num_hidden_layers=2, hidden_size=128,
                                      num_attention_heads=4, intermediate_size=512, max_position_embeddings=128))
    return {"causal": (gpt2.eval(), bpe), "masked": (bert.eval(), wordpiece)}


@torch.no_grad()
def unbatched(kind: str, model: torch.nn.Module, tokenizer, pairs) -> None:
    """One forward pass per sentence (causal) or per masked token (masked)."""
    for pair in pairs:
        if kind == "causal":
            for sentence in (pair.sent_more, pair.sent_less):
                ids = [tokenizer.bos_token_id] + tokenizer(sentence, add_special_tokens=False)["input_ids"]
                model(torch.tensor([ids]))
            continue
        a, b = tokenizer([pair.sent_more, pair.sent_less])["input_ids"]
        for ids, shared in zip((a, b), shared_positions(a, b)):
            for j in shared[1:-1]:
                masked = list(ids)
                masked[j] = tokenizer.mask_token_id
                model(torch.tensor([masked]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundled = read_pairs("lmforge:bias/probe_pairs.csv")
    pairs = (bundled * 5)[:1000]
    for kind, (model, tokenizer) in models().items():
        batched_s, unbatched_s = [], []
        for _ in range(args.repeats):  # A/B alternating
            start = time.perf_counter()
            score_pairs(model, tokenizer, pairs, kind)
            batched_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            unbatched(kind, model, tokenizer, pairs[:100])
            unbatched_s.append(10 * (time.perf_counter() - start))
        ratio = statistics.median(u / b for u, b in zip(unbatched_s, batched_s))
        print(f"{kind:<7} 1000 pairs: batched {statistics.median(batched_s):6.1f} s, one at a time "
              f"{statistics.median(unbatched_s):6.1f} s (x{ratio:.0f}), {args.threads} thread(s), "
              f"median of {args.repeats}")


if __name__ == "__main__":
    main()
