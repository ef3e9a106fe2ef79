"""Generate a labelled set of synthetic documents with personal data, for checking PII detectors.

Every value comes from ``faker`` seeded with ``--seed``: no real personal data is involved, and the
same seed and faker version give the same file. Each document is a short text built from templates;
its gold spans say where each inserted value lies and what type it is (the entity types of
``lmforge.plugins.privacy.pii``). Documents also carry look-alikes that are *not* personal data and
must not be reported: card numbers with a wrong Luhn digit, IBANs with wrong check digits, numbers
that are not IP addresses, versions, prices, dates and order numbers. Names appear as ``PERSON``
spans; detecting them needs a named-entity model.

    python scripts/make_pii_data.py --out pii.jsonl --documents 600 --seed 0

Writes JSON lines ``{"text": ..., "spans": [[start, end, type], ...]}``.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path
from urllib.parse import quote

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR")

# {X} is replaced by a value of type X and labelled; {~x} by a look-alike, not labelled.
TEMPLATES = (
    "Please contact {PERSON} at {EMAIL} for the invoice.",
    "You can reach {PERSON} on {PHONE} during office hours.",
    "Call {PHONE} or write to {EMAIL} if the parcel does not arrive.",
    "The payment of {~price} was made with card {CREDIT_CARD} on {~date}.",
    "Transfer the deposit to IBAN {IBAN} before {~date}, reference {~order}.",
    "{PERSON} logged in from {IP_ADDRESS} at {~time}.",
    "The server at {IP_ADDRESS} answered, but the backup host {IP_ADDRESS} did not.",
    "Deploy with {URL_CREDENTIALS} and do not share it.",
    "The mirror {URL_CREDENTIALS} is used by {PERSON}.",
    "Card {~bad_card} was declined, so {PERSON} paid with {CREDIT_CARD}.",
    "The account {~bad_iban} is invalid; the right one is {IBAN}.",
    "Version {~version} was released on {~date} and costs {~price}.",
    "Order {~order} of {~price} ships to {PERSON}, phone {PHONE}.",
    "Meeting notes from {~date}: {PERSON} and {PERSON} agreed on the plan.",
    "Send the report to {EMAIL} and copy {EMAIL}.",
    "The sensor read {~not_ip} at {~time} and {~measure} later.",
    "Nothing personal here: the train left at {~time} with {~measure} of cargo.",
)


def _value(kind: str, fake, rng: random.Random) -> str:
    if kind == "PERSON":
        return f"{fake.first_name()} {fake.last_name()}"
    if kind == "EMAIL":
        return rng.choice((fake.email, fake.free_email, fake.company_email))()
    if kind == "PHONE":
        return fake.phone_number()
    if kind == "CREDIT_CARD":
        return _group(fake.credit_card_number(), rng)
    if kind == "IBAN":
        iban = fake.iban()
        return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban
    if kind == "IP_ADDRESS":
        return rng.choice((fake.ipv4, fake.ipv4_private, fake.ipv6))()
    if kind == "URL_CREDENTIALS":
        scheme = rng.choice(("https", "http", "ftp", "postgresql", "redis"))
        user, password = fake.user_name(), quote(fake.password(length=rng.randint(8, 14)), safe="")
        return f"{scheme}://{user}:{password}@{fake.domain_name()}/{fake.uri_path()}"
    raise KeyError(kind)


def _lookalike(kind: str, fake, rng: random.Random) -> str:
    if kind == "bad_card":  # a card number whose Luhn check digit is wrong
        number = fake.credit_card_number()
        return _group(number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10), rng)
    if kind == "bad_iban":  # an IBAN whose check digits are wrong
        iban = fake.iban()  # exactly one pair of check digits (02..98) passes the mod-97 check
        return iban[:2] + f"{rng.choice([d for d in range(2, 99) if d != int(iban[2:4])]):02d}" + iban[4:]
    if kind == "not_ip":
        return ".".join(str(rng.randint(256, 999) if i == 0 else rng.randint(0, 255)) for i in range(4))
    if kind == "version":
        return f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"
    if kind == "price":
        return f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d} {rng.choice(('EUR', 'USD', 'GBP'))}"
    if kind == "date":
        return fake.date()
    if kind == "time":
        return fake.time()
    if kind == "order":
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) + str(rng.randint(10**5, 10**7))
    if kind == "measure":
        return f"{rng.randint(1, 500)} {rng.choice(('kg', 'km', 'litres', 'tonnes'))}"
    raise KeyError(kind)


def _group(number: str, rng: random.Random) -> str:
    if len(number) == 16 and rng.random() < 0.5:
        sep = rng.choice((" ", "-"))
        return sep.join(number[i:i + 4] for i in range(0, 16, 4))
    return number


def make_document(rng: random.Random, fakers: dict) -> dict:
    """One document: a template filled with fresh values, and the gold spans of the labelled ones."""
    fake = fakers[rng.choice(LOCALES)]
    template = rng.choice(TEMPLATES)
    text, spans, pos = "", [], 0
    while (start := template.find("{", pos)) != -1:
        end = template.index("}", start)
        text += template[pos:start]
        kind = template[start + 1:end]
        if kind.startswith("~"):
            text += _lookalike(kind[1:], fake, rng)
        else:
            value = _value(kind, fake, rng)
            spans.append([len(text), len(text) + len(value), kind])
            text += value
        pos = end + 1
    return {"text": text + template[pos:], "spans": spans}


def make_documents(n: int, seed: int) -> list[dict]:
    """``n`` labelled documents from ``seed`` (the same for the same seed and faker version)."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = {}
    for i, locale in enumerate(LOCALES):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed * 1000 + i)
    return [make_document(rng, fakers) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON-lines file to write")
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with args.out.open("w", encoding="utf-8") as f:
        for doc in make_documents(args.documents, args.seed):
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"wrote {args.documents} documents to {args.out}")


if __name__ == "__main__":
    main()
