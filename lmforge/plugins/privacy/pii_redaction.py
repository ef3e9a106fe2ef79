"""PII redaction: personal data found with Microsoft Presidio's recognizers, offline, and replaced by a typed
placeholder or a salted hash, or its document dropped, before tokenization, on every split.

Detection and redaction are `lmforge.plugins.privacy.pii` (what each entity type's recognizer validates, and
how well: docs/privacy.md). A data filter rather than an augmenter or a bias mitigator: it must clean the
validation and test splits too, and run before any plugin that could copy personal data (docs/plugins.md).

Scrubbing training data is the usual defence against a model leaking personal data, and a partial one: Lukas
et al. 2023 ("Analyzing Leakage of Personally Identifiable Information in Language Models", IEEE S&P) find
that it lowers but does not remove leakage, since detectors miss some mentions; measure what remains with
`CanaryInsertion` and `MemorizationProbe`.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from typing import Literal

from lmforge.core.plugins import DataFilter, Examples
from lmforge.plugins.privacy.pii import DEFAULT_PHONE_REGIONS, PiiDetector, RedactionMode, redact_batch


class PIIRedaction(DataFilter):
    """Finds personal data with Presidio's recognizers and redacts it (placeholder, hash or drop), on every split.

    It finds e-mail addresses, phone numbers, Luhn-checked card numbers, IBANs, IP addresses, URLs with
    credentials, and names where an installed spaCy NER pipeline is given.

    ``data_report`` gives, per split, the detections redacted per entity type (``EMAIL``, ``PHONE``, ...),
    ``documents``, ``documents_with_pii`` and ``documents_dropped``; they are saved with the run
    (``data_report.json``) and logged as ``data/<split>/pii_redaction/<name>``.

    Args:
        entities: Entity types to redact: ``EMAIL``, ``PHONE``, ``CREDIT_CARD``, ``IBAN``, ``IP_ADDRESS``,
            ``URL_CREDENTIALS``, ``PERSON``. Default: all, ``PERSON`` only with ``spacy_model``.
        mode: ``placeholder`` (``<EMAIL>``), ``hash`` (``<EMAIL:3f9a0c41d2e8>``: a keyed BLAKE2b of the value,
            the same for the same value within a run, so the model still sees that two mentions are one) or
            ``drop`` (remove every document that holds any).
        spacy_model: An installed spaCy pipeline with a named-entity recognizer (package name or directory),
            for ``PERSON``. lmforge downloads nothing.
        phone_regions: ISO 3166 regions in which a number written without a country code is checked.
        min_score: Ignore detections Presidio scores below this (phone numbers score 0.4, IP addresses 0.6,
            checksum-validated matches 1.0).
        salt_env: For ``hash``: the environment variable that holds a secret salt. None: the salt derives from
            the run's seed, which the run's config.yaml records, so anyone with it can test a guess against a
            hash; set a secret salt when that matters.
    """

    def __init__(self, entities: list[str] | None = None, mode: Literal["placeholder", "hash", "drop"] = "placeholder",
                 spacy_model: str | None = None, phone_regions: list[str] | None = None, min_score: float = 0.0,
                 salt_env: str | None = None) -> None:
        super().__init__()
        if mode not in ("placeholder", "hash", "drop"):
            raise ValueError(f"PIIRedaction: mode must be placeholder, hash or drop, got {mode!r}.")
        try:
            self.detector = PiiDetector(entities, spacy_model,
                                        DEFAULT_PHONE_REGIONS if phone_regions is None else phone_regions,
                                        min_score=min_score)
        except ValueError as exc:  # name the plugin (and so the recipe key) rather than its detector
            raise ValueError(str(exc).replace("PiiDetector:", "PIIRedaction:", 1)) from None
        self.entities = list(self.detector.entities)
        self.mode: RedactionMode = mode
        self.salt_env = salt_env
        self._salt = _salt(salt_env)
        self._counts: Counter[str] = Counter()
        self._documents = self._with_pii = self._dropped = 0

    def process_text(self, examples: Examples, rng: random.Random, split: str = "train") -> Examples:
        result = redact_batch(examples["text"], self.detector, self.mode, self._salt)
        self._counts.update(result.counts)
        self._documents += result.documents
        self._with_pii += result.documents_with_pii
        self._dropped += result.documents - len(result.kept)
        out = {column: [values[i] for i in result.kept] for column, values in examples.items()}
        out["text"] = result.texts
        return out

    def data_report(self) -> dict[str, float]:
        report = {entity: float(self._counts[entity]) for entity in self.entities}
        report.update(documents=float(self._documents), documents_with_pii=float(self._with_pii),
                      documents_dropped=float(self._dropped))
        self._counts = Counter()
        self._documents = self._with_pii = self._dropped = 0
        return report

    def data_fingerprint(self) -> str:
        # The detector's options and library versions, and the salt (as a digest: the cache key is not secret).
        salt = hashlib.sha256(self._salt).hexdigest()[:16] if self.mode == "hash" else ""
        return f"{super().data_fingerprint()}:{self.detector.fingerprint()}:salt={salt}"


def _salt(salt_env: str | None) -> bytes:
    if salt_env is None:
        return f"lmforge-pii:{os.environ.get('PL_GLOBAL_SEED', '0')}".encode()
    value = os.environ.get(salt_env)
    if not value:
        raise ValueError(f"PIIRedaction: salt_env names the environment variable {salt_env!r}, which is not set or "
                         "empty. Set it to a secret string, or leave salt_env out to derive the salt from the run's "
                         "seed.")
    return value.encode()
