"""BaseTextData: what every lmforge DataModule shares.

The recipe arguments every DataModule takes (``train``/``val``/``test`` files, ``val_fraction``, ``tokenizer``,
``batch_size``, ``num_workers``, ``cache_dir``, ``seed``) and their checks, the seed, the cache, the tokenizer
(given, taken from a checkpoint, or trained and cached), reading the splits (the held-out validation split
included), the build loop, the data-stage plugin hooks (``process_text``, ``sample_weights``), the loaders and
the resumable training order. `TextData` (`lmforge.core.data.text`), `LabeledTextData`
(`lmforge.core.data.labeled`) and `InstructionData` (`lmforge.core.data.instruction_data`) differ only in how
they read, check, tokenize, lay out and batch their rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmforge.core import static
from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint
from lmforge.core.data.files import default_cache_dir, map_repairing_cache, resolve_files
from lmforge.core.data.tokenizer import (
    TokenizerSpec,
    TokenizerTraining,
    batched_text,
    load_cached_tokenizer,
    load_tokenizer,
    save_tokenizer_atomically,
    tokenizer_from_json,
    train_tokenizer,
    training_cache_key,
)
from lmforge.core.plugin_checks import hook_guard
from lmforge.core.plugins import Plugin, call_hook, overrides

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
if static.TYPE_CHECKING:  # not run by the recipe parser: see lmforge.core.static
    import datasets

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """Training order: a seeded shuffle (or weighted draw) per epoch, split over ranks, resumable mid-epoch.

    Epoch ``e``'s order depends only on ``seed`` and ``e`` (Lightning calls ``set_epoch``), so a resumed run
    draws the same order; ``skip_batches`` drops the batches a checkpoint had already trained on. Written
    here because torch's samplers cannot start mid-epoch (torchdata's StatefulDataLoader would add a
    dependency); a ``DistributedSampler`` subclass so that Lightning does not wrap it under DDP.

    Args:
        size: Examples in the dataset.
        batch_size: Examples per batch on each rank (what ``skip_batches`` counts in).
        seed: Seed of the order.
        rank: This process's global rank.
        world_size: Number of processes; each takes every ``world_size``-th example of the order, and the
            order is cut to a multiple of ``world_size`` so that every rank runs the same number of batches.
        weights: Per-example sampling weights (drawn with replacement), or None for a permutation.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 weights: torch.Tensor | None = None) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; only its public fields are kept.
        self.size, self.batch_size, self.seed, self.weights = size, batch_size, seed, weights
        self.rank, self.num_replicas = rank, world_size
        self.num_samples = size // world_size
        self.total_size = self.num_samples * world_size
        self.epoch = 0
        self.skip_batches = 0

    def order(self, epoch: int) -> list[int]:
        """This rank's examples in epoch ``epoch``, from the start."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        return order[: self.total_size][self.rank :: self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self.skip_batches = self.skip_batches * self.batch_size, 0
        order = self.order(self.epoch)
        return iter(order[skip:] if skip < len(order) else order)  # a checkpoint at the epoch's end: a new epoch

    def __len__(self) -> int:
        return self.num_samples


def data_plugins(module: Any) -> list[Plugin]:
    """The module's data-stage plugins, in pipeline order (bias mitigators, then augmenters)."""
    if module is None or not hasattr(module, "data_plugins"):
        return []
    return list(module.data_plugins())


def file_list(files: str | list[str] | None) -> list[str] | None:
    """A recipe's files (one path or glob, or a list of them) as a list; None stays None."""
    if files is None:
        return None
    return [files] if isinstance(files, str) else list(files)


class BaseTextData(LightningDataModule):
    """What lmforge's DataModules share: their common arguments, the splits, the tokenizer, the data-stage
    plugins and the loaders.

    Each subclass declares its recipe arguments itself (jsonargparse reads the subclass's signature and
    docstring, and the defaults differ), checks its own ones and passes the shared ones here. ``_build`` reads
    the splits (`_read`; `_hold_out` when there are no validation files), runs the data filters on the
    training split, gets the tokenizer (`_make_tokenizer`), then runs every split through the other
    ``process_text`` hooks (`_check_processed`) and lays it out (`_make_dataset`); ``sample_weights`` weigh the
    training split. The recipe's ``data.class_path`` must name a subclass.

    Args:
        train: Training files (paths or globs).
        val: Validation files; None holds out ``val_fraction`` of the training rows.
        test: Test files, read by ``lmforge test`` only; None tests on the validation split.
        val_fraction: Share of training rows held out when ``val`` is None.
        tokenizer: A local tokenizer (``path``) or how to train one (``train``).
        batch_size: Examples per batch (per device).
        num_workers: DataLoader worker processes.
        cache_dir: Where tokenized datasets and trained tokenizers are cached; None: `default_cache_dir`.
        seed: Seed of the split, the data-stage plugins and the shuffling; None takes the run's seed.
    """

    #: What the messages call one row of the files ("document", "row").
    row_name = "row"

    def __init__(self, *, train: str | list[str], val: str | list[str] | None, test: str | list[str] | None,
                 val_fraction: float, tokenizer: TokenizerSpec | None, batch_size: int, num_workers: int,
                 cache_dir: str | None, seed: int | None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
        self.train_files: list[str] = file_list(train)
        self.val_files = file_list(val)
        self.test_files = file_list(test)
        self.val_fraction = val_fraction
        self.tokenizer_spec = tokenizer or TokenizerSpec(train=TokenizerTraining())
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._seed = seed
        self.tokenizer: PreTrainedTokenizerBase | None = None
        #: A checkpoint whose tokenizer to use instead of training one (set by the CLI from --ckpt_path).
        self.checkpoint_path: str | None = None
        self.train_weights: torch.Tensor | None = None
        #: Per split, each data-stage plugin's ``data_report`` figures (saved with the run as data_report.json).
        self.data_reports: dict[str, dict[str, dict[str, float]]] = {}
        #: Set by ``setup``: each split laid out (``train``, ``val``, and ``test`` when it is read).
        self.datasets: dict[str, Dataset] = {}
        self._resume_batches = 0

    @property
    def seed(self) -> int:
        if self._seed is not None:
            return self._seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    # -- Lightning hooks -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        # Rank 0 fills the caches (trained tokenizer, tokenized splits); `setup` on every rank reads them.
        with self._progress_bars():
            self._build()

    def setup(self, stage: str | None = None) -> None:
        with self._progress_bars():
            self._build()
        run_dir = self._run_dir(stage)
        if run_dir is not None:
            self.save_with_run(run_dir)

    def _run_dir(self, stage: str | None) -> Path | None:
        """The run directory on the rank that writes it (global zero, fitting, with a logger).

        ``Trainer.log_dir`` is a collective (it broadcasts rank 0's directory), so every rank reads it and
        only rank 0 keeps it: read on rank 0 alone, it pairs with the next collective of the other ranks
        and a distributed run hangs.
        """
        trainer = self.trainer
        if stage != "fit" or trainer is None or trainer.logger is None:
            return None
        log_dir = trainer.log_dir  # every rank: a collective
        return Path(log_dir) if trainer.is_global_zero and log_dir is not None else None

    def save_with_run(self, run_dir: Path) -> None:
        """Write what the run keeps besides its checkpoints: the tokenizer, and the data-stage plugins' reports."""
        self.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        if self.data_reports:
            (run_dir / "data_report.json").write_text(json.dumps(self.data_reports, indent=2), encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch (batches this rank has trained on), saved in checkpoints."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        return {"epoch_batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_batches = int(state_dict.get("epoch_batches", 0))

    # -- loaders ---------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.datasets["train"], self._collate())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], self._collate(), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The test split when ``data.test`` is given, else the validation split."""
        if "test" in self.datasets:
            return self._loader(self.datasets["test"], self._collate(), shuffle=False)
        return self.val_dataloader()

    def _collate(self) -> Any:
        """The DataLoader's ``collate_fn`` (picklable, for worker processes)."""
        raise NotImplementedError

    def _loader(self, data: Dataset, collate_fn: Any, **kwargs: Any) -> DataLoader:
        return DataLoader(
            data, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_fn,
            pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0,
            # The loader's own generator seeds its workers, so starting an epoch draws nothing from the global
            # generator (that dropout uses): a resumed run's dropout masks match the uninterrupted run's.
            generator=torch.Generator().manual_seed(self.seed), **kwargs,
        )

    def _rank_world(self) -> tuple[int, int]:
        """This process's global rank and the number of processes ((0, 1) outside a trainer)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _sampler(self, data: Dataset, rank: int, world_size: int) -> ResumableSampler:
        """The training order: shuffled by the data seed, or drawn by the plugins' sample weights."""
        return ResumableSampler(len(data), self.batch_size, self.seed, rank, world_size, weights=self.train_weights)

    def _train_loader(self, data: Dataset, collate_fn: Any) -> DataLoader:
        """`_sampler`'s order, resumable mid-epoch."""
        sampler = self._sampler(data, *self._rank_world())
        if self._resume_batches:  # a mid-epoch checkpoint: continue after the batches it had trained on
            sampler.skip_batches = self._resume_batches
            self._resume_batches = 0
        return self._loader(data, collate_fn, sampler=sampler, drop_last=True)

    # -- building --------------------------------------------------------------------------------

    def _build(self) -> None:
        """Every split read, through the data-stage plugins and laid out in ``datasets`` (once)."""
        if self.datasets:
            return
        self._check_model()
        raw = self._load_splits()
        plugins = self._plugins()
        train, filters = self._filtered_train(raw.pop("train"), plugins)
        self.tokenizer = self._make_tokenizer(train)
        self._build_split("train", train, plugins[filters:], first=filters)
        for split, rows in raw.items():
            self._build_split(split, rows, plugins)

    def _check_model(self) -> None:
        """Settings the model cannot take (its objective, its positions) fail before any file is read."""
        self._check_objective()
        module = self.trainer.lightning_module if self.trainer is not None else None
        if hasattr(module, "check_data"):
            module.check_data(self)

    def _check_objective(self) -> None:
        """Refuse a ``model.objective`` that cannot train on these rows (none refused here)."""

    def _read(self, files: list[str], key: str) -> datasets.Dataset:
        """The rows of ``files`` (recipe key ``key``)."""
        raise NotImplementedError

    def _load_splits(self) -> dict[str, datasets.Dataset]:
        """The rows of ``train``, ``val`` (read, or held out of the training files) and, when this run reads
        it, ``test``."""
        train = self._read(self.train_files, "data.train")
        if self.val_files is not None:
            val = self._read(self.val_files, "data.val")
            self._check_split(train, val, "data.val")
            splits = {"train": train, "val": val}
        else:
            held_in, held_out = self._hold_out(train)
            splits = {"train": held_in, "val": held_out}
        if self.reads_test_split():
            test = self._read(self.test_files, "data.test")
            self._check_split(train, test, "data.test")
            splits["test"] = test
        return splits

    def _check_split(self, train: datasets.Dataset, rows: datasets.Dataset, key: str) -> None:
        """Refuse the rows of ``key`` (``data.val``, ``data.test``) that do not go with ``train`` (none here)."""

    def _hold_out(self, train: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        """The training rows split into training and validation rows (``val_fraction`` of them, at random)."""
        if len(train) < 2:
            raise ValueError(
                f"data.train: {len(train)} {self.row_name}(s) cannot be split into train and validation; "
                f"add {self.row_name}s or give data.val."
            )
        parts = train.train_test_split(test_size=self.val_fraction, seed=self.seed, shuffle=True)
        return parts["train"], parts["test"]

    def _make_tokenizer(self, train: datasets.Dataset) -> PreTrainedTokenizerBase:
        """The tokenizer, given or trained on ``train`` (after the data filters), ready for the layout."""
        return self._get_tokenizer(train)

    def _build_split(self, split: str, rows: datasets.Dataset, plugins: list[Plugin], first: int = 0) -> None:
        """``rows`` through the ``process_text`` of ``plugins`` (the first at ``first`` in the run order), then
        weighed (the training split) and laid out into ``datasets[split]``."""
        rows = self._apply_text_plugins(rows, split, plugins, first=first)
        self._check_processed(rows, split)
        if split == "train":
            self.train_weights = self._sample_weights(rows, plugins)
        self.datasets[split] = self._make_dataset(rows, split)

    def _check_processed(self, rows: datasets.Dataset, split: str) -> None:
        """Check or note a split's rows after the data-stage plugins (nothing here)."""

    def _make_dataset(self, rows: datasets.Dataset, split: str) -> Dataset:
        """The split's rows laid out for the loader (tokenized, packed or padded)."""
        raise NotImplementedError

    def split_key(self, split: str) -> str:
        """The recipe key of the files a split was read from (a held-out validation split: ``data.train``)."""
        if split == "test":
            return "data.test"
        return "data.val" if split == "val" and self.val_files is not None else "data.train"

    # -- shared building blocks ------------------------------------------------------------------

    def _objective(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(module, "objective", None)

    def _plugins(self) -> list[Plugin]:
        return data_plugins(self.trainer.lightning_module if self.trainer is not None else None)

    def _progress_bars(self) -> contextlib.AbstractContextManager[None]:
        # `--trainer.enable_progress_bar false` silences the tokenization and preparation bars too.
        quiet = self.trainer is not None and getattr(self.trainer, "progress_bar_callback", True) is None
        return datasets_progress_bars(enabled=not quiet)

    def data_files(self) -> dict[str, list[Path]]:
        """The files each split reads, globs expanded: ``{"data.train": [...], "data.val": [...]}``.

        The run's record (`lmforge.runtime.observe.RunConfig`) fingerprints them.
        """
        files = {"data.train": resolve_files(self.train_files, "data.train")}
        if self.val_files is not None:
            files["data.val"] = resolve_files(self.val_files, "data.val")
        if self.test_files is not None:
            files["data.test"] = resolve_files(self.test_files, "data.test")
        return files

    def check_files(self) -> None:
        """Every split's files exist (globs match): a missing file is named with its key before anything runs."""
        self.data_files()

    def reads_test_split(self) -> bool:
        """Whether this run reads ``data.test``: it is given, and the trainer tests (or there is no trainer)."""
        if self.test_files is None:
            return False
        return self.trainer is None or self.trainer.state.fn == "test"

    def _given_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer that needs no training: ``tokenizer.path``'s, or the checkpoint's when validating,
        testing or resuming; None when one must be trained."""
        if self.tokenizer_spec.path is not None:
            return load_tokenizer(self.tokenizer_spec.path)
        if self.checkpoint_path and Path(self.checkpoint_path).is_file():
            saved = load_checkpoint(self.checkpoint_path, mmap=True)[CKPT_KEY]
            return tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
        return None

    def _get_tokenizer(self, train: datasets.Dataset, texts: Iterable[str] | None = None,
                       max_chars: int | None = None) -> PreTrainedTokenizerBase:
        """Load ``tokenizer.path`` or train one on ``texts`` (default: the ``text`` column of ``train``), texts
        longer than ``max_chars`` in pieces (`batched_text`)."""
        given = self._given_tokenizer()
        if given is not None:
            return given
        training, algorithm = self._tokenizer_training()
        data_key = f"{train._fingerprint}:{max_chars}"
        directory = self.cache_dir / "tokenizers" / training_cache_key(training, algorithm, data_key)
        if directory.exists():
            cached = load_cached_tokenizer(directory)
            if cached is not None:
                return cached
        log.info("Training a %s tokenizer (vocab_size=%d) on %d documents", algorithm, training.vocab_size, len(train))
        texts = batched_text(train["text"] if texts is None else texts, max_chars=max_chars)
        tokenizer = train_tokenizer(texts, training, algorithm)
        save_tokenizer_atomically(tokenizer, directory)
        return tokenizer

    def _tokenizer_training(self) -> tuple[TokenizerTraining, str]:
        """How a tokenizer to train is trained: the recipe's settings, and the algorithm (the recipe's, else the
        objective's choice, else ``bpe``)."""
        training = self.tokenizer_spec.train or TokenizerTraining()
        return training, training.algorithm or getattr(self._objective(), "tokenizer_algorithm", "bpe")

    def _filtered_train(self, train: datasets.Dataset, plugins: list[Plugin]) -> tuple[datasets.Dataset, int]:
        """The training split after the data filters that open the run order, and how many ran.

        The tokenizer is trained on it, so that what the filters redact or drop (personal data) never becomes
        vocabulary; the other plugins then continue from it (`_apply_text_plugins` with ``first``).
        """
        n = 0
        while n < len(plugins) and plugins[n].kind == "data_filter":
            n += 1
        return self._apply_text_plugins(train, "train", plugins[:n]), n

    def _apply_text_plugins(self, docs: datasets.Dataset, split: str, plugins: list[Plugin],
                            first: int = 0) -> datasets.Dataset:
        """``docs`` through the ``process_text`` of ``plugins``, the first of which is at ``first`` in the run order."""
        for position, plugin in enumerate(plugins, start=first):
            if not overrides(plugin, "process_text"):
                continue
            if split not in plugin.splits:
                continue
            new_fingerprint = fingerprint(docs._fingerprint, plugin, self.seed, position, split)
            with hook_guard(plugin, "process_text"):
                docs = map_repairing_cache(
                    docs, _TextStage(plugin, self.seed, position, split), f"data.{split}", batched=True,
                    with_indices=True, new_fingerprint=new_fingerprint, desc=f"{type(plugin).__name__} ({split})",
                )
            if overrides(plugin, "data_report"):
                self._collect_report(plugin, split, new_fingerprint)
            if len(docs) == 0:
                raise ValueError(f"{type(plugin).__name__} left no {split} documents; check its settings.")
        return docs

    def _collect_report(self, plugin: Plugin, split: str, key: str) -> None:
        """The plugin's ``data_report`` for this split's pass, kept beside the dataset cache under the pass's
        fingerprint: when the pass came from the cache (``process_text`` did not run), the kept report is it."""
        path = self.cache_dir / "reports" / f"{key}.json"
        with hook_guard(plugin, "data_report"):
            report = plugin.data_report()
        if report is not None and not path.exists():  # this pass ran now: keep its figures with the cache
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: float(v) for k, v in report.items()}), encoding="utf-8")
            os.replace(tmp, path)
        elif path.exists():
            report = json.loads(path.read_text(encoding="utf-8"))
        if report is not None:
            self.data_reports.setdefault(split, {})[plugin.name] = {k: float(v) for k, v in report.items()}

    def _sample_weights(self, docs: datasets.Dataset, plugins: list[Plugin]) -> torch.Tensor | None:
        weights = None
        for plugin in plugins:
            if not overrides(plugin, "sample_weights"):
                continue
            with hook_guard(plugin, "sample_weights"):
                w = plugin.sample_weights(docs)
            if w is None:
                continue
            w = torch.as_tensor(w, dtype=torch.double)
            if w.shape != (len(docs),) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
                raise ValueError(
                    f"{type(plugin).__name__}.sample_weights must return {len(docs)} finite, non-negative "
                    f"weights, got shape {tuple(w.shape)}."
                )
            weights = w if weights is None else weights * w
        return weights


class _TextStage:
    """Runs one plugin's ``process_text`` on a map batch with a batch-seeded ``random.Random``."""

    def __init__(self, plugin: Plugin, seed: int, position: int, split: str) -> None:
        self.plugin, self.seed, self.position, self.split = plugin, seed, position, split

    def __call__(self, examples: dict[str, list], indices: list[int]) -> dict[str, list]:
        first = indices[0] if indices else 0
        rng = random.Random(f"{self.seed}:{self.position}:{type(self.plugin).__name__}:{first}")
        try:
            out = call_hook(self.plugin.process_text, examples, rng, split=self.split)
        except KeyError as exc:  # a text plugin on data without its column (token-level data has no "text")
            if exc.args and exc.args[0] not in examples:
                raise ValueError(
                    f"{type(self.plugin).__name__}.process_text needs a {exc.args[0]!r} column; this data has "
                    f"{sorted(examples)}. Remove the plugin from the recipe or use data it applies to."
                ) from None
            raise
        lengths = {k: len(v) for k, v in out.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self.plugin).__name__}.process_text returned columns of unequal length: {lengths}")
        return out


@contextlib.contextmanager
def datasets_progress_bars(enabled: bool) -> Iterator[None]:
    """Turn ``datasets``' progress bars off inside the block when ``enabled`` is False (a global switch).

    With ``enabled``, nothing is touched, so a run whose data comes from the block cache never imports
    ``datasets`` (`lmforge.core.data.block_cache`)."""
    if enabled:
        yield
        return
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def fingerprint(*parts: Any) -> str:
    payload = "|".join(p.data_fingerprint() if isinstance(p, Plugin) else str(p) for p in parts)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
