"""Streaming: over 2 ranks x 2 dataloader workers every document is read exactly once per epoch, and each
reader's blocks are the ``pack`` of its documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.core.data.streaming import StreamingBlocks
from lmforge.core.data.text import pack


class CharTokenizer:
    """One id per character: enough to check packing against ``pack``."""

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def write_shards(root: Path, n_shards: int, docs_per_shard: int) -> list[Path]:
    paths = []
    for s in range(n_shards):
        path = root / f"shard-{s}.jsonl"
        lines = [json.dumps({"text": f"doc {s}-{i} " + "x" * (i % 7)}) for i in range(docs_per_shard)]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.mark.parametrize("n_shards", [4, 3])  # whole shards per reader, and every 4th document of 3 shards
def test_each_document_once_over_two_ranks_and_two_workers(tmp_path: Path, n_shards: int) -> None:
    files = write_shards(tmp_path, n_shards, 10)
    expected = sorted(json.loads(line)["text"] for f in files for line in f.read_text().splitlines())
    seen = []
    for rank in range(2):
        data = StreamingBlocks(files, CharTokenizer(), block_size=8, rank=rank, world_size=2)
        for worker in range(2):
            seen += list(data.documents(rank * 2 + worker, 4))  # what __iter__ reads in worker `worker`
    assert sorted(seen) == expected


def test_blocks_are_the_pack_of_the_readers_documents(tmp_path: Path) -> None:
    files = write_shards(tmp_path, 2, 9)
    data = StreamingBlocks(files, CharTokenizer(), block_size=8, rank=1, world_size=2)
    docs = list(data.documents(1, 2))
    expected, _, _ = pack(CharTokenizer()(docs)["input_ids"], 8)
    blocks = [b["input_ids"].tolist() for b in data.blocks(1, 2, batch=4)]  # packing crosses tokenizer batches
    assert blocks == expected.tolist()
    assert [b["input_ids"].tolist() for b in data] == blocks  # outside a worker: rank 1 is reader 1 of 2


# -- TextData(streaming=True) -----------------------------------------------------------------------

import random  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from lmforge.core.backbone import Backbone  # noqa: E402
from lmforge.core.data.text import TextData  # noqa: E402
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining, train_tokenizer  # noqa: E402
from lmforge.core.module import LanguageModel  # noqa: E402
from lmforge.plugins.objectives.causal_lm import CausalLM  # noqa: E402

WORDS = "the cat sat on a mat and dog ran to park while birds sang in tall green trees".split()
TINY = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 16})


def write_text_shards(root: Path, sizes: list[int], seed: int = 0) -> list[Path]:
    """jsonl shards of word documents, each starting with a unique name; ``sizes`` documents per shard."""
    rng = random.Random(seed)
    paths = []
    for s, n in enumerate(sizes):
        docs = [f"doc{s}x{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) for i in range(n)]
        paths.append(root / f"shard-{s}.jsonl")
        paths[-1].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return paths


def stub_trainer(rank: int, world: int) -> SimpleNamespace:
    """What TextData and StreamingLoader read of a trainer, for one rank of ``world`` in this process (no
    process group: the all-reduce that ends an epoch together is the rank's own decision)."""
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    return SimpleNamespace(global_rank=rank, world_size=world, lightning_module=None, logger=None, strategy=strategy,
                           state=SimpleNamespace(fn="fit"))


def test_text_data_streams_every_document_once_per_epoch_over_two_ranks_and_two_workers(tmp_path: Path) -> None:
    files = write_text_shards(tmp_path, [9, 14, 6, 11, 7])  # 5 shards over 4 readers: every 4th document
    corpus = [json.loads(line)["text"] for f in files for line in f.read_text().splitlines()]
    tokenizer = train_tokenizer([corpus], TokenizerTraining(vocab_size=300), "bpe")
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    (tmp_path / "val.txt").write_text("the cat sat on the mat\n" * 20)

    readers = StreamingBlocks(files, None, block_size=16)
    reader_docs = [list(readers.documents(r, 4)) for r in range(4)]
    assert sorted(d for docs in reader_docs for d in docs) == sorted(corpus)  # a partition of the corpus
    # What each reader must give: its documents tokenized as TextData tokenizes them (EOS after each), packed.
    eos = tokenizer.eos_token_id
    expected = sorted(tuple(block) for docs in reader_docs
                      for block in pack([ids + [eos] for ids in tokenizer(docs)["input_ids"]], 16)[0].tolist())

    seen: dict[int, list[tuple[int, ...]]] = {0: [], 1: []}
    for rank in range(2):
        data = TextData(train=str(tmp_path / "shard-*.jsonl"), val=str(tmp_path / "val.txt"), block_size=16,
                        batch_size=3, num_workers=2, tokenizer=TokenizerSpec(path=str(tmp_path / "tok")),
                        cache_dir=str(tmp_path / "cache"), streaming=True, seed=0)
        data.trainer = stub_trainer(rank, 2)
        data.setup("fit")
        loader = data.train_dataloader()
        for epoch in range(2):
            blocks = [tuple(b) for batch in loader for b in batch["input_ids"].tolist()]
            seen[epoch] += blocks
    assert sorted(seen[0]) == expected
    assert sorted(seen[1]) == expected  # the next epoch reads the stream again, whole


class Record(Callback):
    """Per step: the epoch, the batch's tokens and the loss."""

    def __init__(self) -> None:
        self.by_step: dict[int, tuple] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = (trainer.current_epoch, batch["input_ids"].tolist(), float(outputs["loss"]))


def fit_streaming(tmp_path: Path, out: Path, steps: int, ckpt_path: str | None = None) -> Record:
    seed_everything(3)
    data = TextData(train=str(tmp_path / "shard-*.jsonl"), val=str(tmp_path / "val.txt"), block_size=16,
                    batch_size=4, num_workers=2, tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                    cache_dir=str(tmp_path / "cache"), streaming=True, seed=0)
    data.checkpoint_path = ckpt_path  # as `lmforge fit --ckpt_path` sets it: the checkpoint's tokenizer
    record = Record()
    callbacks = [record,
                 ModelCheckpoint(dirpath=out / "steps", filename="{step}", every_n_train_steps=1, save_top_k=-1),
                 ModelCheckpoint(dirpath=out / "epochs", filename="{step}", every_n_epochs=1, save_top_k=-1,
                                 save_on_train_epoch_end=True)]
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0)
    trainer.fit(LanguageModel(TINY, CausalLM()), datamodule=data, ckpt_path=ckpt_path)
    return record


@pytest.mark.slow
def test_streaming_run_resumed_mid_epoch_sees_the_uninterrupted_runs_blocks(tmp_path: Path) -> None:
    write_text_shards(tmp_path, [5, 8, 3, 6])
    (tmp_path / "val.txt").write_text("the cat sat on the mat\n" * 20)
    full = fit_streaming(tmp_path, tmp_path / "full", 14)
    epochs = [epoch for epoch, _, _ in full.by_step.values()]
    first_epoch = epochs.count(0)
    assert 3 < first_epoch < 14 and epochs[-1] == 1  # the run crosses an epoch boundary after the stops below

    for stop in ("steps/step=3.ckpt", f"epochs/step={first_epoch}.ckpt"):  # mid-epoch; the end of epoch 0
        resumed = fit_streaming(tmp_path, tmp_path / stop.replace("/", "-"), 14, str(tmp_path / "full" / stop))
        start = int(stop.split("=")[1].split(".")[0])
        assert sorted(resumed.by_step) == list(range(start + 1, 15))
        for step, (epoch, blocks, loss) in resumed.by_step.items():
            # Bitwise: the same blocks in the same order, so the same arithmetic.
            assert (epoch, blocks, loss) == full.by_step[step], (stop, step)


def test_streaming_needs_val_and_refuses_text_stage_plugins(tmp_path: Path) -> None:
    files = write_text_shards(tmp_path, [4])
    with pytest.raises(ValueError, match="data.streaming needs data.val"):
        TextData(train=str(files[0]), streaming=True)
    from lmforge.plugins.augmenters.random_swap import RandomSwap

    data = TextData(train=str(files[0]), val=str(files[0]), streaming=True, cache_dir=str(tmp_path / "cache"))
    data.trainer = stub_trainer(0, 1)
    data.trainer.lightning_module = SimpleNamespace(data_plugins=lambda: [RandomSwap()])
    with pytest.raises(ValueError, match=r"RandomSwap\.process_text.*data.streaming to false"):
        data.setup("fit")


def test_stream_positions_resume_only_with_the_same_ranks_and_workers(tmp_path: Path) -> None:
    from lmforge.core.data.streaming import StreamingLoader

    blocks = StreamingBlocks(write_text_shards(tmp_path, [4]), CharTokenizer(), block_size=8)
    loader = StreamingLoader(blocks, stub_trainer(0, 1), batch_size=2)
    saved = {"batches": 3, "loader": {}, "workers": 2}
    with pytest.raises(ValueError, match="stream positions of 2 rank"):
        loader.load_state_dict({"ranks": [saved, saved]})
    with pytest.raises(ValueError, match="same data.num_workers"):
        loader.load_state_dict({"ranks": [saved]})
