"""Session fixtures of the journeys: the runner, the shared recipe runs and local Hugging Face models.

The runner and the helpers live in ``journey_kit.py``; its docstring says what a journey is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from journey_kit import PROBE, TEACHERS, Journeys, RecipeRun, bundled_jsonl, bundled_text, short_args


@pytest.fixture(scope="session")
def journeys(tmp_path_factory: pytest.TempPathFactory) -> Journeys:
    """The session's runner: one LMFORGE_CACHE for every journey, so tokenized data is reused."""
    return Journeys(tmp_path_factory.mktemp("journey-cache"), tmp_path_factory.mktemp("journey-logs"))


@pytest.fixture(scope="session")
def fit_recipe(journeys: Journeys, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], RecipeRun]:
    """``fit_recipe(name)``: the recipe fitted once per session (shortened, with the probe), from scratch.

    A distillation recipe runs in its teacher recipe's working directory, after it, as its header says.
    """
    runs: dict[str, RecipeRun] = {}

    def fit(recipe: str) -> RecipeRun:
        if recipe in runs:
            return runs[recipe]
        if recipe in TEACHERS:
            teacher = fit(TEACHERS[recipe])
            teacher.result.expect_ok()
            workdir = teacher.workdir
        else:
            workdir = tmp_path_factory.mktemp(f"fit-{recipe}")
        result = journeys.lmforge(["fit", "--config", recipe, *short_args(recipe), PROBE], workdir)
        runs[recipe] = RecipeRun(recipe, workdir, result)
        return runs[recipe]

    return fit


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local GPT-2 directory (model, config and a byte-level BPE tokenizer), sizes unlike any recipe's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("hf-gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(bundled_text("corpus/train.txt"), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        model_input_names=["input_ids", "attention_mask"])
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=24, n_head=2, n_positions=64,
                        bos_token_id=eos, eos_token_id=eos)
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local BERT masked-LM directory with a WordPiece tokenizer, sizes unlike any recipe's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("hf-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    texts = bundled_text("corpus/train.txt") + [row["text"] for row in bundled_jsonl("sentiment/train.jsonl")] \
        + [" ".join(row["tokens"]) for row in bundled_jsonl("ner/train.jsonl")]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials,
                                                             show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=24, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    import torch

    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
