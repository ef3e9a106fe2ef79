"""Does debiasing work? Three small GPT-2s trained on lmforge's deliberately skewed corpus.

The corpus (``lmforge:bias/skewed_occupations.txt``) pairs each of 20 occupations with its stereotyped
gender 90 % of the time. With the same seed and number of steps we train

1. ``baseline``: no mitigation,
2. ``cda``: two-sided CounterfactualAugmentation,
3. ``adversarial``: AdversarialDebiasing (gradient reversal into an adversary that predicts gender),

and measure

- the CrowS-Pairs score of the bundled probe set (gender, and overall; 50 = no preference), and
- how well a fresh logistic-regression probe, trained on the frozen mean-pooled last-layer states of
  the training documents (attribute words left out of the pooling, as the adversary sees them),
  predicts the gender of held-out documents: fresh documents from the corpus generator
  (``scripts/make_bias_data.py``, another seed, none seen in training). Chance is the majority share.

One seed takes about 3 to 6 minutes on 2 CPU cores (three trainings of 800 steps):

    python benchmarks/bias_experiment.py                 # the defaults, as reported
    python benchmarks/bias_experiment.py --seeds 0 1 2   # mean over seeds
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lmforge.core.backbone import Backbone  # noqa: E402
from lmforge.core.data.text import TextData  # noqa: E402
from lmforge.core.data.files import bundled_data_dir  # noqa: E402
from lmforge.core.module import LanguageModel  # noqa: E402
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining  # noqa: E402
from lmforge.plugins.bias.adversarial_debiasing import AdversarialDebiasing, segment_mean, token_groups  # noqa: E402
from lmforge.plugins.bias.counterfactual_augmentation import CounterfactualAugmentation  # noqa: E402
from lmforge.plugins.bias.probe import read_pairs, score_pairs  # noqa: E402
from lmforge.plugins.bias.wordlists import GENDER_TERMS, read_attribute_terms, single_group  # noqa: E402
from lmforge.plugins.objectives.causal_lm import CausalLM  # noqa: E402

TRAIN = bundled_data_dir() / "bias" / "skewed_occupations.txt"
VAL = bundled_data_dir() / "bias" / "skewed_occupations_val.txt"
GENERATOR = Path(__file__).resolve().parent.parent / "scripts" / "make_bias_data.py"
HELD_OUT_SEED, HELD_OUT_BYTES = 31337, 60_000


def held_out_documents() -> list[str]:
    """Fresh skewed documents from the corpus generator, none of them in the training or validation file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_bias_data", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    seen = frozenset(TRAIN.read_text(encoding="utf-8").splitlines() + VAL.read_text(encoding="utf-8").splitlines())
    return generator.skewed_corpus(HELD_OUT_SEED, HELD_OUT_BYTES, seen)


def train(variant: str, args: argparse.Namespace, seed: int, cache: Path) -> LanguageModel:
    seed_everything(seed, verbose=False)
    mitigators = {"baseline": [], "cda": [CounterfactualAugmentation()],
                  "adversarial": [AdversarialDebiasing(reversal_weight=args.reversal_weight,
                                                       warmup_steps=args.warmup_steps)]}[variant]
    backbone = Backbone("gpt2", {"n_layer": args.layers, "n_embd": args.width, "n_head": 4, "n_positions": 128})
    model = LanguageModel(backbone, CausalLM(), bias_mitigators=mitigators,
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": args.lr}})
    data = TextData(train=str(TRAIN), val=str(VAL), block_size=64, batch_size=16, seed=seed, cache_dir=str(cache),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="bpe", vocab_size=args.vocab)))
    trainer = Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      gradient_clip_val=1.0)
    trainer.fit(model, datamodule=data)
    return model.eval()


def documents(lines: list[str], lookup: dict[str, int]) -> tuple[list[str], list[int]]:
    """The documents of one gender only, and that gender."""
    texts, labels = [], []
    for line in lines:
        group = single_group(line, lookup)
        if group is not None:
            texts.append(line)
            labels.append(group)
    return texts, labels


@torch.no_grad()
def pooled_states(model: LanguageModel, texts: list[str], token_group: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden states over the non-attribute tokens of each document -> (N, H)."""
    out = []
    tokenizer = model.tokenizer
    for i in range(0, len(texts), 64):
        enc = tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model.backbone(**enc, output_hidden_states=True).hidden_states[-1]
        keep = enc["attention_mask"].bool() & (token_group[enc["input_ids"]] < 0)
        out.append(segment_mean(hidden, torch.zeros_like(keep, dtype=torch.long), keep)[0][:, 0])
    return torch.cat(out)


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                   steps: int = 300) -> float:
    """Accuracy of a logistic regression trained (full batch, Adam) on standardized features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    clf = torch.nn.Linear(x_train.shape[1], 2)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(clf(x_train), y_train).backward()
        opt.step()
    return float((clf(x_test).argmax(-1) == y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--reversal-weight", type=float, default=3.0, help="AdversarialDebiasing lambda")
    parser.add_argument("--warmup-steps", type=int, default=200, help="AdversarialDebiasing lambda warm-up")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lmforge").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()

    pairs = read_pairs("lmforge:bias/probe_pairs.csv")
    terms = read_attribute_terms(GENDER_TERMS, "gender terms")
    lookup = terms.term_groups("gender terms")
    train_texts, train_labels = documents(TRAIN.read_text(encoding="utf-8").splitlines(), lookup)
    test_texts, test_labels = documents(held_out_documents(), lookup)
    majority = max(test_labels.count(0), test_labels.count(1)) / len(test_labels)
    results: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        for seed in args.seeds:
            for variant in ("baseline", "cda", "adversarial"):
                model = train(variant, args, seed, Path(cache))
                scores = score_pairs(model.backbone, model.tokenizer, pairs, "causal").scores()
                token_group, _ = token_groups(model.tokenizer, terms.rows)
                accuracy = probe_accuracy(pooled_states(model, train_texts, token_group), torch.tensor(train_labels),
                                          pooled_states(model, test_texts, token_group), torch.tensor(test_labels))
                row = results.setdefault(variant, {"gender": [], "overall": [], "probe": []})
                row["gender"].append(scores["gender"])
                row["overall"].append(scores["overall"])
                row["probe"].append(100 * accuracy)
                print(f"seed {seed} {variant:<12} gender {scores['gender']:5.1f}  overall {scores['overall']:5.1f}  "
                      f"gender-probe accuracy {100 * accuracy:5.1f} %  ({time.perf_counter() - start:.0f} s)",
                      flush=True)
    print(f"\nGPT-2 {args.layers}x{args.width}, {args.steps} steps of 16x64 tokens, seeds {args.seeds}, adversary "
          f"lambda {args.reversal_weight} (warm-up {args.warmup_steps} steps); gender probe trained on "
          f"{len(train_texts)} training documents, tested on {len(test_texts)} held-out ones "
          f"(majority class {100 * majority:.1f} %)")
    print(f"{'variant':<12}{'CrowS gender':>14}{'CrowS overall':>15}{'gender probe acc':>18}   (mean over seeds)")
    for variant, row in results.items():
        print(f"{variant:<12}{statistics.mean(row['gender']):>14.1f}{statistics.mean(row['overall']):>15.1f}"
              f"{statistics.mean(row['probe']):>17.1f}%")


if __name__ == "__main__":
    main()
