"""Character noise: keyboard typos, dropped and swapped letters (in the spirit of
Belinkov & Bisk 2018, "Synthetic and Natural Noise Both Break Neural Machine
Translation", and the character operations of nlpaug).

Each letter (``str.isalpha``, any script) is hit with probability ``p``; a hit
letter gets one of the enabled operations, drawn uniformly among those that
apply to it:

- ``typo``: replaced by a neighbour on a QWERTY keyboard, keeping its case
  (ASCII letters only; no neighbour table for other scripts);
- ``drop``: deleted;
- ``swap``: exchanged with the next character, when that is a different letter.

Whitespace, digits and punctuation are never touched, so word boundaries stay.
"""

from __future__ import annotations

import random
from typing import Literal

from lmforge.plugins.augmenters._text import TextAugmenter, check_rate

Operation = Literal["typo", "drop", "swap"]

#: The letters next to each key of a QWERTY keyboard.
KEYBOARD_NEIGHBOURS: dict[str, str] = {
    "q": "wa", "w": "qase", "e": "wsdr", "r": "edft", "t": "rfgy", "y": "tghu", "u": "yhji", "i": "ujko",
    "o": "iklp", "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "j": "huikmn", "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv",
    "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}


def keyboard_typo(char: str, rng: random.Random) -> str:
    """A QWERTY neighbour of ``char`` with the same case (``char`` must have one)."""
    typo = rng.choice(KEYBOARD_NEIGHBOURS[char.lower()])
    return typo.upper() if char.isupper() else typo


def char_noise(text: str, p: float, operations: tuple[str, ...], rng: random.Random) -> str:
    """``text`` with each letter hit by a typo, drop or swap with probability ``p``."""
    if p <= 0.0:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not char.isalpha() or rng.random() >= p:
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        possible = [op for op in operations
                    if op == "drop"
                    or (op == "typo" and char.lower() in KEYBOARD_NEIGHBOURS)
                    or (op == "swap" and nxt.isalpha() and nxt != char)]
        if not possible:
            out.append(char)
            i += 1
            continue
        op = rng.choice(possible)
        if op == "typo":
            out.append(keyboard_typo(char, rng))
        elif op == "swap":
            out.extend((nxt, char))
            i += 1
        i += 1
    return "".join(out)


class CharNoise(TextAugmenter):
    """Keyboard-neighbour typos, dropped and swapped letters, each letter hit with probability p.

    Args:
        p: Probability that a letter is hit by one of ``operations``.
        operations: The operations to draw from: ``typo`` (QWERTY neighbour),
            ``drop`` (delete the letter), ``swap`` (exchange it with the next letter).
        copies: Augmented copies added per document, the original kept; 0
            rewrites each document in place.
    """

    def __init__(self, p: float = 0.05, operations: list[Operation] | None = None, copies: int = 1) -> None:
        super().__init__(copies)
        check_rate("CharNoise", "p", p)
        operations = ["typo", "drop", "swap"] if operations is None else list(operations)
        unknown = sorted(set(operations) - {"typo", "drop", "swap"})
        if unknown or not operations:
            raise ValueError(f"CharNoise: operations must be a non-empty list of typo, drop, swap; got {operations}.")
        self.p = p
        self.operations = tuple(dict.fromkeys(operations))

    def augment(self, text: str, rng: random.Random) -> str:
        return char_noise(text, self.p, self.operations, rng)
