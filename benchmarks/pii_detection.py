"""Precision and recall of lmforge's PII detector per entity type, and its speed on the bundled corpus.

The labelled set comes from ``scripts/make_pii_data.py`` (synthetic values from a seeded ``faker``,
with look-alikes that must not be reported). A detection counts as correct when a gold span of the
same type has exactly its start and end (``strict``) or overlaps it (``overlap``). Detections are
counted after overlaps are resolved, i.e. as they would be redacted.

    python benchmarks/pii_detection.py                       # 600 documents, seed 0
    python benchmarks/pii_detection.py --spacy-model en_core_web_sm   # names too, with an installed model

Speed: documents per second of ``PiiDetector.detect`` over the bundled training corpus (one document
per line), the median of ``--repeats`` passes.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections import Counter
from pathlib import Path

from lmforge.plugins.privacy.pii import ENTITY_TYPES, PATTERN_ENTITY_TYPES, PiiDetector, resolve_overlaps

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "make_pii_data.py"
CORPUS = ROOT / "lmforge" / "data" / "corpus" / "train.txt"


def labelled_documents(n: int, seed: int) -> list[dict]:
    spec = importlib.util.spec_from_file_location("make_pii_data", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator.make_documents(n, seed)


def score(docs: list[dict], predictions: list[list], match: str) -> dict[str, tuple[int, int, int]]:
    """Per type: (true positives, predicted, gold)."""
    tp, predicted, gold = Counter(), Counter(), Counter()
    for doc, spans in zip(docs, predictions):
        golds = [tuple(g) for g in doc["spans"]]
        gold.update(g[2] for g in golds)
        unmatched = list(golds)
        for s in spans:
            predicted[s.entity] += 1
            for g in unmatched:
                same = (s.start, s.end) == (g[0], g[1]) if match == "strict" else s.start < g[1] and g[0] < s.end
                if g[2] == s.entity and same:
                    tp[s.entity] += 1
                    unmatched.remove(g)
                    break
    return {t: (tp[t], predicted[t], gold[t]) for t in ENTITY_TYPES}


def _valid_phone(text: str, region: str) -> bool:
    import phonenumbers

    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return False


def ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacy-model", default=None, help="an installed spaCy pipeline with NER, for PERSON")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    detector = PiiDetector(spacy_model=args.spacy_model)
    build_s = time.perf_counter() - t0
    docs = labelled_documents(args.documents, args.seed)
    predictions = [resolve_overlaps(s) for s in detector.detect([d["text"] for d in docs])]
    print(f"{len(docs)} generated documents (seed {args.seed}), entities: {', '.join(detector.entities)}")
    if args.spacy_model is None:
        print("PERSON: no NER model given (--spacy-model), so names are not detected")
    print(f"\n{'type':<16} {'gold':>5} {'found':>6} {'P strict':>9} {'R strict':>9} {'P overlap':>10} {'R overlap':>10}")
    strict, overlap = score(docs, predictions, "strict"), score(docs, predictions, "overlap")
    total = [0, 0, 0, 0]
    for t in ENTITY_TYPES:
        (tp, pred, gold), (tpo, _, _) = strict[t], overlap[t]
        print(f"{t:<16} {gold:>5} {pred:>6} {ratio(tp, pred):>9} {ratio(tp, gold):>9} {ratio(tpo, pred):>10} "
              f"{ratio(tpo, gold):>10}")
        if t in PATTERN_ENTITY_TYPES or args.spacy_model:
            total = [total[0] + tp, total[1] + pred, total[2] + gold, total[3] + tpo]
    print(f"{'all detected':<16} {total[2]:>5} {total[1]:>6} {ratio(total[0], total[1]):>9} "
          f"{ratio(total[0], total[2]):>9} {ratio(total[3], total[1]):>10} {ratio(total[3], total[2]):>10}")

    phones = [d["text"][a:b] for d in docs for a, b, t in d["spans"] if t == "PHONE"]
    valid = sum(any(_valid_phone(p, r) for r in detector.phone_regions) for p in phones)
    print(f"\nPHONE: {valid} of {len(phones)} generated numbers are valid numbers of a region in "
          f"{','.join(detector.phone_regions)} for libphonenumber (faker draws some area codes at random)")

    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    times, found = [], 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        found = sum(len(resolve_overlaps(s)) for s in detector.detect(corpus))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"\nbundled corpus: {len(corpus)} documents, {found} detections, "
          f"{len(corpus) / median:.0f} documents/s (median of {args.repeats}); detector built in {build_s:.2f} s")


if __name__ == "__main__":
    main()
