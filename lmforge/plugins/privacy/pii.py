"""Detection and redaction of personal data (PII) in training text.

Detection uses the recognizers of Microsoft Presidio's analyzer (``presidio-analyzer``), which work
offline:

=================  ===========================================================================
entity             recognizer (what validates a match)
=================  ===========================================================================
``EMAIL``          Presidio ``EmailRecognizer`` (the domain must end in a public suffix, from
                   ``tldextract``'s bundled snapshot: no download)
``PHONE``          Presidio ``PhoneRecognizer``: Google's libphonenumber (``phonenumbers``),
                   numbers valid for one of ``phone_regions``, grouped as that region writes them
``CREDIT_CARD``    Presidio ``CreditCardRecognizer`` (Luhn checksum), with one pattern added for
                   Mastercard's 2-series numbers (2221-2720, issued since 2017), which Presidio's
                   pattern does not cover
``IBAN``           Presidio ``IbanRecognizer`` (ISO 13616 mod-97 checksum and country format)
``IP_ADDRESS``     Presidio ``IpRecognizer`` (IPv4 and IPv6, checked with ``ipaddress``)
``URL_CREDENTIALS`` `UrlCredentialsRecognizer` below: no library recognizes a URL that carries a
                   user name and password (Presidio's URL pattern stops at ``user:pass@``), so one
                   pattern finds ``scheme://user:password@host...`` and ``urllib.parse`` checks it
``PERSON``         Presidio ``SpacyRecognizer``, only with a spaCy pipeline that has a named-entity
                   recognizer (``spacy_model``); no such English pipeline installs from PyPI, so
                   names are detected only where the user installed one
=================  ===========================================================================

Overlapping detections are resolved longest first (a mail address inside a URL with credentials
is part of the URL). Redaction replaces each detection with a typed placeholder (``<EMAIL>``), a
salted hash that is the same for the same text and salt (``<EMAIL:3f9a0c41d2e8>``), or drops the
document. Everything here is deterministic: the same texts, options and salt give the same output.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
URL_CREDENTIALS = "URL_CREDENTIALS"
PERSON = "PERSON"

#: Every entity type, in report order.
ENTITY_TYPES: tuple[str, ...] = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, URL_CREDENTIALS, PERSON)
#: The entity types that need no NER model.
PATTERN_ENTITY_TYPES: tuple[str, ...] = ENTITY_TYPES[:-1]
#: Presidio's name of each entity type.
PRESIDIO_NAMES: dict[str, str] = {EMAIL: "EMAIL_ADDRESS", PHONE: "PHONE_NUMBER", CREDIT_CARD: "CREDIT_CARD",
                                  IBAN: "IBAN_CODE", IP_ADDRESS: "IP_ADDRESS", URL_CREDENTIALS: "URL_CREDENTIALS",
                                  PERSON: "PERSON"}
_FROM_PRESIDIO = {v: k for k, v in PRESIDIO_NAMES.items()}
#: Presidio's default phone regions: numbers valid in one of them are reported.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
#: libphonenumber's leniency: 2 (``STRICT_GROUPING``) asks digits to be grouped as the region writes them.
#: Presidio's default, 1 (``VALID``), also reports prices and dotted numbers ("3397.11" is a valid German
#: number): on the generated set (benchmarks/pii_detection.py) it costs 0.17 of precision for 0.03 of recall.
DEFAULT_PHONE_LENIENCY = 2
#: Characters of the hex digest in a hashed placeholder (48 bits: collisions are negligible within a corpus).
HASH_CHARS = 12

RedactionMode = Literal["placeholder", "hash", "drop"]
REDACTION_MODES: tuple[str, ...] = ("placeholder", "hash", "drop")


@dataclass(frozen=True, order=True)
class PiiSpan:
    """One detection: ``text[start:end]`` is personal data of type ``entity``.

    Attributes:
        start: Offset of the first character.
        end: Offset one past the last character.
        entity: One of `ENTITY_TYPES`.
        score: The recognizer's confidence in [0, 1] (checksum-validated matches score 1).
    """

    start: int
    end: int
    entity: str
    score: float = 1.0


def resolve_overlaps(spans: Sequence[PiiSpan]) -> list[PiiSpan]:
    """The spans to redact: where detections overlap, keep the longest (then the highest score).

    Returns:
        Non-overlapping spans, sorted by position.
    """
    chosen: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, -s.score, s.start, s.entity)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen)


def placeholder(entity: str) -> str:
    """The typed placeholder of ``entity``: ``<EMAIL>``."""
    return f"<{entity}>"


def hashed_placeholder(value: str, entity: str, salt: bytes) -> str:
    """``<ENTITY:digest>``: a keyed BLAKE2b hash of ``value``, the same for the same value and salt.

    The same address hashed with the same salt gives the same placeholder everywhere in a corpus, so a
    model still sees that two mentions are one person's; without the salt the value cannot be recovered
    by hashing guesses.
    """
    digest = hashlib.blake2b(value.encode("utf-8"), key=salt[:64], digest_size=HASH_CHARS // 2).hexdigest()
    return f"<{entity}:{digest}>"


def redact(text: str, spans: Sequence[PiiSpan], mode: RedactionMode, salt: bytes = b"") -> str | None:
    """``text`` with ``spans`` redacted.

    Args:
        text: One document.
        spans: Detections in ``text``; overlapping ones are resolved with `resolve_overlaps`.
        mode: ``placeholder`` (``<EMAIL>``), ``hash`` (``<EMAIL:3f9a0c41d2e8>``, see
            `hashed_placeholder`) or ``drop`` (the document is removed when it holds any span).
        salt: The key of ``hash`` mode.

    Returns:
        The redacted text, or None when ``mode`` is ``drop`` and ``text`` holds personal data.
    """
    if mode not in REDACTION_MODES:
        raise ValueError(f"redact: mode must be one of {', '.join(REDACTION_MODES)}, got {mode!r}.")
    spans = resolve_overlaps(spans)
    if not spans:
        return text
    if mode == "drop":
        return None
    parts, last = [], 0
    for span in spans:
        parts.append(text[last:span.start])
        if mode == "hash":
            parts.append(hashed_placeholder(text[span.start:span.end], span.entity, salt))
        else:
            parts.append(placeholder(span.entity))
        last = span.end
    parts.append(text[last:])
    return "".join(parts)


@dataclass
class Redaction:
    """The result of `redact_batch`.

    Attributes:
        texts: The kept documents, redacted, in input order.
        kept: For each kept document, its index in the input.
        counts: Detections redacted, per entity type (after overlaps are resolved), dropped documents'
            included.
        documents: Documents seen.
        documents_with_pii: Documents that held at least one detection.
    """

    texts: list[str] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    documents: int = 0
    documents_with_pii: int = 0


def redact_batch(texts: Sequence[str], detector: PiiDetector, mode: RedactionMode,
                 salt: bytes = b"") -> Redaction:
    """Detect and redact personal data in ``texts``; see `redact` for ``mode`` and ``salt``."""
    result = Redaction(documents=len(texts))
    for i, (text, spans) in enumerate(zip(texts, detector.detect(texts))):
        spans = resolve_overlaps(spans)
        result.counts.update(s.entity for s in spans)
        result.documents_with_pii += bool(spans)
        redacted = redact(text, spans, mode, salt)
        if redacted is not None:
            result.texts.append(redacted)
            result.kept.append(i)
    return result


class PiiDetector:
    """Finds personal data in texts with Presidio's recognizers, offline.

    Args:
        entities: Entity types to detect (`ENTITY_TYPES`); default: all of them that the installed
            models support (``PERSON`` only with ``spacy_model``).
        spacy_model: A spaCy pipeline with a named-entity recognizer, as an installed package name
            (``en_core_web_sm``) or a pipeline directory; needed for ``PERSON``. None: a blank
            English tokenizer, no names. Nothing is downloaded: a model that is not installed is an
            error.
        phone_regions: ISO 3166 region codes; a phone number written without a country code is
            reported when it is valid in one of these regions.
        phone_leniency: libphonenumber's leniency, 0 (``POSSIBLE``) to 3 (``EXACT_GROUPING``); see
            `DEFAULT_PHONE_LENIENCY`.
        min_score: Detections scoring below this are ignored (Presidio scores phone numbers 0.4, IP
            addresses 0.6, checksum-validated matches 1.0).
        batch_size: Texts per batch through the spaCy pipeline.
    """

    def __init__(self, entities: Sequence[str] | None = None, spacy_model: str | None = None,
                 phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
                 phone_leniency: int = DEFAULT_PHONE_LENIENCY, min_score: float = 0.0, batch_size: int = 64) -> None:
        if entities is None:
            entities = ENTITY_TYPES if spacy_model else PATTERN_ENTITY_TYPES
        unknown = [e for e in entities if e not in ENTITY_TYPES]
        if unknown or not entities:
            raise ValueError(f"PiiDetector: entities must be a non-empty list of {', '.join(ENTITY_TYPES)}, got "
                             f"{list(entities)}. Remove {unknown or 'nothing'} or name at least one type.")
        if PERSON in entities and not spacy_model:
            raise ValueError("PiiDetector: entities include PERSON, which needs a spaCy pipeline with a named-entity "
                             "recognizer, and spacy_model is None. Install one (for example en_core_web_sm from "
                             "spaCy's model releases) and set spacy_model to its name or directory, or leave PERSON "
                             "out of entities.")
        if importlib.util.find_spec("presidio_analyzer") is None:
            raise ImportError("PiiDetector: detecting personal data needs Microsoft Presidio's analyzer, which is not "
                              "installed. Install it with `pip install 'lmforge[privacy]'`.")
        if phone_leniency not in (0, 1, 2, 3):
            raise ValueError(f"PiiDetector: phone_leniency must be 0, 1, 2 or 3, got {phone_leniency!r}.")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"PiiDetector: min_score must be in [0, 1], got {min_score}.")
        self.entities = tuple(dict.fromkeys(entities))
        self.spacy_model = spacy_model
        self.phone_regions = tuple(phone_regions)
        self.phone_leniency = phone_leniency
        self.min_score = min_score
        self.batch_size = batch_size
        if spacy_model is not None and not _installed_pipeline(spacy_model):
            raise ValueError(f"PiiDetector: spacy_model must be an installed spaCy pipeline package or a pipeline "
                             f"directory, got {spacy_model!r}, which is neither. Install it first; lmforge never "
                             "downloads models.")
        self._analyzer: Any = None  # built on first use (seconds: spaCy and Presidio load), never pickled

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzer": None}

    @property
    def analyzer(self) -> Any:
        """Presidio's ``AnalyzerEngine`` with the recognizers of `entities`, built on first use."""
        if self._analyzer is None:
            self._analyzer = _build_analyzer(self.entities, self.spacy_model, self.phone_regions, self.phone_leniency)
        return self._analyzer

    def detect(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """The detections in each text, sorted by position; they may overlap (see `resolve_overlaps`)."""
        analyzer = self.analyzer
        engine = analyzer.nlp_engine
        wanted = [PRESIDIO_NAMES[e] for e in self.entities]
        out = []
        for text, artifacts in engine.process_batch(list(texts), language="en", batch_size=self.batch_size):
            results = analyzer.analyze(text=text, language="en", entities=wanted, nlp_artifacts=artifacts,
                                       score_threshold=self.min_score)
            out.append(sorted(PiiSpan(r.start, r.end, _FROM_PRESIDIO[r.entity_type], float(r.score))
                              for r in results))
        return out

    def fingerprint(self) -> str:
        """A string that changes whenever the detections could change (for dataset caches)."""
        from importlib.metadata import version

        return (f"PiiDetector:{self.entities}:{self.spacy_model}:{self.phone_regions}:{self.phone_leniency}:"
                f"{self.min_score}:"
                f"presidio-analyzer={version('presidio-analyzer')}:phonenumbers={version('phonenumbers')}")


def _build_analyzer(entities: Sequence[str], spacy_model: str | None, phone_regions: Sequence[str],
                    phone_leniency: int) -> Any:
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer, validating domains against tldextract's bundled suffix list.

        Presidio's own ``validate_result`` uses tldextract's default extractor, which fetches the
        public suffix list over the network on first use (and caches it under the home directory).
        """

        def validate_result(self, pattern_text: str) -> bool:
            return _suffix_extractor()(pattern_text).fqdn != ""

    class UrlCredentialsRecognizer(PatternRecognizer):
        """A URL with a user name and a password (``https://user:secret@host/path``)."""

        PATTERNS = [Pattern("URL with user:password", r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]]+:[^\s/?#@]*@"
                            r"[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", 0.9)]

        def __init__(self) -> None:
            super().__init__(supported_entity=PRESIDIO_NAMES[URL_CREDENTIALS], patterns=self.PATTERNS,
                             supported_language="en", name="UrlCredentialsRecognizer")

        def validate_result(self, pattern_text: str) -> bool:
            try:
                parts = urlsplit(pattern_text)
                return bool(parts.username and parts.password and parts.hostname)
            except ValueError:  # e.g. a malformed port or IPv6 host
                return False

    class LocalSpacyNlpEngine(SpacyNlpEngine):
        """Presidio's spaCy engine, loading only what is installed (Presidio downloads a missing model)."""

        def load(self) -> None:
            import spacy

            if spacy_model is None:
                self.nlp = {"en": spacy.blank("en")}
                return
            if not (spacy.util.is_package(spacy_model) or Path(spacy_model).exists()):
                raise ValueError(f"PiiDetector: spacy_model must be an installed spaCy pipeline package or a "
                                 f"pipeline directory, got {spacy_model!r}, which is neither. Install it first; "
                                 "lmforge never downloads models.")
            self.nlp = {"en": spacy.load(spacy_model)}

    # Luhn-checked like the others; the prefix 22-27 is a superset of 2221-2720.
    MASTERCARD_2_SERIES = Pattern("Mastercard 2-series", r"\b(2[2-7]\d{2})[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b", 0.3)
    recognizers = {
        EMAIL: OfflineEmailRecognizer,
        PHONE: lambda: PhoneRecognizer(supported_regions=tuple(phone_regions), leniency=phone_leniency),
        CREDIT_CARD: lambda: CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, MASTERCARD_2_SERIES]),
        IBAN: IbanRecognizer,
        IP_ADDRESS: IpRecognizer,
        URL_CREDENTIALS: UrlCredentialsRecognizer,
        PERSON: lambda: SpacyRecognizer(supported_entities=[PRESIDIO_NAMES[PERSON]]),
    }
    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in entities:
        registry.add_recognizer(recognizers[entity]())
    engine = LocalSpacyNlpEngine(models=[{"lang_code": "en", "model_name": spacy_model or "blank:en"}])
    engine.load()
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def _installed_pipeline(spacy_model: str) -> bool:
    """Whether ``spacy_model`` names an importable pipeline package or an existing directory (without importing
    spaCy, which takes seconds)."""
    if Path(spacy_model).exists():
        return True
    try:
        return importlib.util.find_spec(spacy_model) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or an empty name
        return False


_EXTRACTOR: Any = None


def _suffix_extractor() -> Any:
    """tldextract with its bundled public suffix list: no HTTP request, no cache directory."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        import tldextract

        _EXTRACTOR = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
    return _EXTRACTOR
