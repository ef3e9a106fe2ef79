"""Generate the small instruction-tuning set bundled with lmforge.

Writes ``lmforge/data/instructions/{train,val}.jsonl``: short instructions, each with exactly one right
answer, so that a model's greedy generation can be scored by exact match. Every row holds the example in
both shapes lmforge reads (``messages``: a user and an assistant turn; ``prompt``/``response``) and the
``task`` it belongs to:

* arithmetic: ``add``, ``subtract`` (never negative) and ``multiply`` on small numbers;
* ``fact``: questions about the science facts of the bundled corpus (``scripts/make_corpus.py``'s
  ``fact`` list; the script checks that each one occurs in ``corpus/train.txt``);
* format-following on lists of 2-6 lowercase corpus words: ``uppercase``, ``reverse`` (the word order),
  ``count`` (the words), ``sort`` (alphabetically) and ``last_word``.

Each task draws its items (an operand pair, a word list, a fact) from a ``random.Random`` with a fixed
seed and words its prompt in one of a few phrasings. Validation items never occur in training, in any
phrasing, except for facts: a fact's validation question is a phrasing of it that training does not use,
so that the validation set asks what the corpus taught in words the instruction set never paired with it.
Running the script twice gives byte-identical files.
"""
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import VOCAB  # noqa: E402  (the corpus's facts and word lists)

DATA_DIR = Path(__file__).resolve().parent.parent / "lmforge" / "data"
OUT_DIR = DATA_DIR / "instructions"
SEED = 20250214
#: Examples per task: (train, val).
SIZES = {
    "add": (400, 60), "subtract": (300, 50), "multiply": (150, 30), "fact": (72, 36),
    "uppercase": (300, 50), "reverse": (300, 50), "count": (250, 40), "sort": (250, 40), "last_word": (200, 40),
}

ARITHMETIC = {
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."),
    "subtract": ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}."),
    "multiply": ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b}."),
}
WORD_TASKS = {
    "uppercase": ("Write these words in capital letters: {words}", "Uppercase: {words}",
                  "Repeat in upper case: {words}"),
    "reverse": ("Reverse the order of these words: {words}", "Write these words backwards, last word first: {words}",
                "Reverse: {words}"),
    "count": ("How many words are in this list: {words}", "Count the words: {words}",
              "Number of words in \"{words}\"?"),
    "sort": ("Sort these words alphabetically: {words}", "Put in alphabetical order: {words}",
             "Alphabetize: {words}"),
    "last_word": ("What is the last word of this list: {words}", "Give the final word: {words}",
                  "Last word of \"{words}\"?"),
}
FACT_PHRASINGS = ("{q}", "Answer briefly: {q}", "{q} Give a short answer.")

#: Each corpus fact (verbatim from make_corpus.VOCAB["fact"]) -> a question and its one right answer.
FACTS = {
    "water boils at 100 degrees Celsius at sea level":
        ("At sea level, water boils at how many degrees Celsius?", "100"),
    "the moon travels around the earth about once a month":
        ("How often does the moon travel around the earth?", "about once a month"),
    "plants use sunlight to make sugar from water and carbon dioxide":
        ("What do plants use to make sugar from water and carbon dioxide?", "sunlight"),
    "sound travels faster through water than through air":
        ("Does sound travel faster through water or through air?", "through water"),
    "light from the sun takes about eight minutes to reach the earth":
        ("About how many minutes does light from the sun take to reach the earth?", "eight"),
    "ice floats because it is less dense than liquid water":
        ("Why does ice float?", "because it is less dense than liquid water"),
    "the earth turns once on its axis every day":
        ("How often does the earth turn once on its axis?", "every day"),
    "a rainbow appears when sunlight is bent by drops of rain":
        ("What bends sunlight when a rainbow appears?", "drops of rain"),
    "the heart pumps blood around the body without ever resting":
        ("What pumps blood around the body without ever resting?", "the heart"),
    "an adult human has 206 bones":
        ("How many bones does an adult human have?", "206"),
    "most of the surface of the earth is covered by oceans":
        ("What covers most of the surface of the earth?", "oceans"),
    "magnets pull on iron but not on wood or plastic":
        ("Which of iron, wood and plastic do magnets pull on?", "iron"),
    "copper is a good conductor of electricity":
        ("Which metal is named as a good conductor of electricity?", "copper"),
    "the air we breathe is mostly nitrogen":
        ("What is the air we breathe mostly made of?", "nitrogen"),
    "lightning is hotter than the surface of the sun":
        ("What is hotter than the surface of the sun?", "lightning"),
    "bats find insects in the dark by listening to echoes":
        ("How do bats find insects in the dark?", "by listening to echoes"),
    "bees carry pollen from one flower to another":
        ("What do bees carry from one flower to another?", "pollen"),
    "Jupiter is the largest planet in the solar system":
        ("Which planet is the largest in the solar system?", "Jupiter"),
    "a day on Venus is longer than a year on Venus":
        ("On which planet is a day longer than a year?", "Venus"),
    "diamonds and pencil lead are both made of carbon":
        ("What are diamonds and pencil lead both made of?", "carbon"),
    "salt water freezes at a lower temperature than fresh water":
        ("Which freezes at a lower temperature, salt water or fresh water?", "salt water"),
    "hot air rises because it is lighter than the cold air around it":
        ("Why does hot air rise?", "because it is lighter than the cold air around it"),
    "seeds need water, air and warmth to start growing":
        ("What do seeds need to start growing?", "water, air and warmth"),
    "the human brain uses about a fifth of the body's energy":
        ("How much of the body's energy does the human brain use?", "about a fifth"),
    "stars look small only because they are very far away":
        ("Why do stars look small?", "because they are very far away"),
    "metal feels colder than wood because it carries heat away from the hand faster":
        ("Which feels colder to the hand, metal or wood?", "metal"),
    "leaves turn yellow in autumn when their green pigment breaks down":
        ("In which season do leaves turn yellow?", "autumn"),
    "the Pacific is the largest ocean on earth":
        ("Which is the largest ocean on earth?", "the Pacific"),
    "octopuses have three hearts":
        ("How many hearts do octopuses have?", "three"),
    "honeybees tell each other where flowers are by dancing":
        ("How do honeybees tell each other where flowers are?", "by dancing"),
    "owls can turn their heads very far":
        ("Which birds can turn their heads very far?", "owls"),
    "dolphins sleep with one half of the brain at a time":
        ("Which animals sleep with one half of the brain at a time?", "dolphins"),
    "frogs can drink water through their skin":
        ("What can frogs drink water through?", "their skin"),
    "crows can solve simple puzzles":
        ("Which birds can solve simple puzzles?", "crows"),
    "horses can sleep standing up":
        ("Which animals can sleep standing up?", "horses"),
    "camels can go a long time without water":
        ("Which animals can go a long time without water?", "camels"),
}

#: Word pools of the corpus grammar that hold single lowercase words.
WORD_POOLS = ("produce", "spice", "staple", "dairy", "fruit", "plants", "flowers", "subject", "instrument",
              "pet_adj", "wild_animal", "habitat", "game", "season", "workplace", "drink", "baked")


def corpus_words():
    """The distinct single lowercase words of the corpus grammar's word pools, sorted."""
    return sorted({w for pool in WORD_POOLS for w in VOCAB[pool] if w.isalpha() and w.islower()})


def answer(task, item):
    """The one right answer of ``task`` for ``item`` (operands, or a tuple of words)."""
    if task in ARITHMETIC:
        a, b = item
        return str({"add": a + b, "subtract": a - b, "multiply": a * b}[task])
    words = list(item)
    return {"uppercase": " ".join(w.upper() for w in words), "reverse": " ".join(reversed(words)),
            "count": str(len(words)), "sort": " ".join(sorted(words)), "last_word": words[-1]}[task]


def arithmetic_items(task):
    if task == "add":
        return [(a, b) for a in range(31) for b in range(31)]
    if task == "subtract":
        return [(a, b) for a in range(31) for b in range(a + 1)]
    return [(a, b) for a in range(2, 10) for b in range(2, 13)]


def word_items(rng, words, n):
    """``n`` distinct word lists of 2-6 distinct words."""
    items = set()
    while len(items) < n:
        items.add(tuple(rng.sample(words, rng.randint(2, 6))))
    return sorted(items)


def row(task, prompt, response):
    return {"task": task, "prompt": prompt, "response": response,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def task_rows(rng, task, n_train, n_val, words):
    """Train and val rows of one task; no val item (or, for facts, val question) occurs in train."""
    if task == "fact":
        train, val = [], []
        for fact, (question, reply) in FACTS.items():
            phrasings = list(FACT_PHRASINGS)
            rng.shuffle(phrasings)
            val.append(row(task, phrasings[0].format(q=question), reply))
            train += [row(task, p.format(q=question), reply) for p in phrasings[1:]]
        return train[:n_train], val[:n_val]
    templates = ARITHMETIC.get(task) or WORD_TASKS[task]
    if task in ARITHMETIC:
        items = arithmetic_items(task)
    else:
        items = word_items(rng, words, 2 * (n_train + n_val))
    rng.shuffle(items)
    val_items, train_items = items[:n_val], items[n_val:]

    def fill(item, template):
        if task in ARITHMETIC:
            return template.format(a=item[0], b=item[1])
        return template.format(words=" ".join(item))

    val = [row(task, fill(item, rng.choice(templates)), answer(task, item)) for item in val_items]
    # Training pairs each item with phrasings until there are enough; a (item, phrasing) pair occurs once.
    pairs = [(item, t) for t in templates for item in train_items]
    rng.shuffle(pairs)
    if len(pairs) < n_train:
        raise SystemExit(f"{task}: only {len(pairs)} distinct training prompts, {n_train} asked")
    train = [row(task, fill(item, t), answer(task, item)) for item, t in pairs[:n_train]]
    return train, val


def check_facts():
    """Every fact must be one of the corpus grammar's and occur in the bundled training corpus."""
    corpus = (DATA_DIR / "corpus" / "train.txt").read_text(encoding="utf-8").lower()
    for fact in FACTS:
        if fact not in VOCAB["fact"]:
            raise SystemExit(f"not a corpus fact: {fact!r}")
        if fact.lower() not in corpus:
            raise SystemExit(f"the fact {fact!r} does not occur in corpus/train.txt; run scripts/make_corpus.py")


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    check_facts()
    rng = random.Random(SEED)
    words = corpus_words()
    train, val = [], []
    for task, (n_train, n_val) in SIZES.items():
        t, v = task_rows(rng, task, n_train, n_val, words)
        train += t
        val += v
    rng.shuffle(train)
    rng.shuffle(val)
    train_prompts = {r["prompt"] for r in train}
    if any(r["prompt"] in train_prompts for r in val):
        raise SystemExit("a validation prompt occurs in training")
    write_jsonl(OUT_DIR / "train.jsonl", train)
    write_jsonl(OUT_DIR / "val.jsonl", val)
    print(f"wrote {len(train)} train and {len(val)} val instructions to {OUT_DIR}")


if __name__ == "__main__":
    main()
