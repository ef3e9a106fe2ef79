"""PIIRedaction through TextData: the data report equals the counts taken plainly on the files, every split is
redacted, the modes and the salt, and the tokenizer never learns what was redacted."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.privacy.pii import PATTERN_ENTITY_TYPES, PiiDetector, redact, resolve_overlaps
from lmforge.plugins.privacy.pii_redaction import PIIRedaction

TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64})
GENERATOR = Path(__file__).resolve().parents[3] / "scripts" / "make_pii_data.py"


class Recorded(TextData):
    """TextData that keeps each split's processed documents (what it packs into blocks)."""

    def _layout(self, docs, split):
        self.documents = {**getattr(self, "documents", {}), split: list(docs["text"])}
        return super()._layout(docs, split)


def prepared(train: Path, val: Path, cache: Path, data_filters: list, vocab_size: int = 400) -> Recorded:
    model = LanguageModel(TINY_GPT2, CausalLM(), data_filters=data_filters)
    data = Recorded(train=str(train), val=str(val), block_size=16, batch_size=4, seed=0, cache_dir=str(cache),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=vocab_size)))
    data.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, is_global_zero=True,
                                   logger=None, progress_bar_callback=None)
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def pii_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated documents with synthetic personal data (faker), as jsonl: a training and a validation file."""
    spec = importlib.util.spec_from_file_location("make_pii_data", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    out = tmp_path_factory.mktemp("pii")
    files = {}
    for split, (n, seed) in {"train": (120, 11), "val": (30, 12)}.items():
        files[split] = out / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(d) + "\n" for d in generator.make_documents(n, seed)))
    return files


def lines(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_the_data_report_equals_the_counts_taken_plainly_on_the_files(pii_files, tmp_path: Path) -> None:
    data = prepared(pii_files["train"], pii_files["val"], tmp_path, [PIIRedaction()])
    detector = PiiDetector()
    for split in ("train", "val"):
        texts = lines(pii_files[split])
        spans = [resolve_overlaps(detector.detect([t])[0]) for t in texts]  # one document at a time
        counts = Counter(s.entity for doc in spans for s in doc)
        expected = {t: float(counts[t]) for t in PATTERN_ENTITY_TYPES}
        expected.update(documents=float(len(texts)), documents_with_pii=float(sum(map(bool, spans))),
                        documents_dropped=0.0)
        assert data.data_reports[split]["pii_redaction"] == expected
        assert data.documents[split] == [redact(t, s, "placeholder") for t, s in zip(texts, spans)]
        assert expected["EMAIL"] > 5 and expected["documents_with_pii"] > len(texts) / 2  # the files hold plenty
    again = prepared(pii_files["train"], pii_files["val"], tmp_path, [PIIRedaction()])
    assert again.data_reports == data.data_reports  # read from the dataset cache: the same figures


def test_drop_mode_removes_every_document_that_holds_personal_data(pii_files, tmp_path: Path) -> None:
    data = prepared(pii_files["train"], pii_files["val"], tmp_path, [PIIRedaction(mode="drop")])
    detector = PiiDetector()
    texts = lines(pii_files["val"])
    clean = [t for t in texts if not detector.detect([t])[0]]
    assert data.documents["val"] == clean
    report = data.data_reports["val"]["pii_redaction"]
    assert report["documents_dropped"] == report["documents_with_pii"] == len(texts) - len(clean)


def test_hash_salt_comes_from_the_run_seed_or_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = {"text": ["Write to jane@example.com."], "id": [0]}

    def hashed(salt: bytes) -> str:
        digest = hashlib.blake2b(b"jane@example.com", key=salt, digest_size=6).hexdigest()
        return f"Write to <EMAIL:{digest}>."

    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    first = PIIRedaction(entities=["EMAIL"], mode="hash")
    assert first.process_text(dict(examples), None)["text"] == [hashed(b"lmforge-pii:1")]
    monkeypatch.setenv("PL_GLOBAL_SEED", "2")
    second = PIIRedaction(entities=["EMAIL"], mode="hash")
    assert second.process_text(dict(examples), None)["text"] == [hashed(b"lmforge-pii:2")]
    assert first.data_fingerprint() != second.data_fingerprint()  # another salt: another dataset cache entry
    monkeypatch.setenv("MY_PII_SALT", "a secret")
    secret = PIIRedaction(entities=["EMAIL"], mode="hash", salt_env="MY_PII_SALT")
    assert secret.process_text(dict(examples), None)["text"] == [hashed(b"a secret")]
    assert "a secret" not in secret.data_fingerprint()
    with pytest.raises(ValueError, match="salt_env names the environment variable 'NO_SUCH_SALT', which is not set"):
        PIIRedaction(mode="hash", salt_env="NO_SUCH_SALT")


def test_the_tokenizer_never_learns_what_is_redacted(corpus, tmp_path: Path) -> None:
    # A secret repeated in many documents becomes vocabulary when the tokenizer sees it.
    leaky = tmp_path / "train.txt"
    leaky.write_text(corpus["train"].read_text() + "write to zqxjvw@example.com now\n" * 200)
    plain = prepared(leaky, corpus["val"], tmp_path / "a", [])
    assert any("zqx" in token for token in plain.tokenizer.get_vocab())
    redacted = prepared(leaky, corpus["val"], tmp_path / "b", [PIIRedaction(entities=["EMAIL"])])
    assert not any("zqx" in token for token in redacted.tokenizer.get_vocab())
    assert redacted.documents["train"].count("write to <EMAIL> now") == 200


def test_it_pickles_without_presidio_and_rebuilds_it_on_use() -> None:
    plugin = PIIRedaction(entities=["EMAIL"])
    assert plugin.process_text({"text": ["a@example.com"]}, None)["text"] == ["<EMAIL>"]
    assert plugin.detector._analyzer is not None
    copy = pickle.loads(pickle.dumps(plugin))
    assert copy.detector._analyzer is None
    assert copy.process_text({"text": ["b@example.com"]}, None)["text"] == ["<EMAIL>"]


def test_bad_options_are_explained() -> None:
    with pytest.raises(ValueError, match="mode must be placeholder, hash or drop, got 'mask'"):
        PIIRedaction(mode="mask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PIIRedaction: entities include PERSON, which needs a spaCy pipeline"):
        PIIRedaction(entities=["PERSON"])
