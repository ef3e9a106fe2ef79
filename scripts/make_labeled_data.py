"""Generate the small labeled data sets bundled with lmforge.

Writes:

* ``lmforge/data/sentiment/{train,val}.jsonl`` -- ``{"text", "label"}`` with
  labels positive / negative / neutral, balanced. Reviews of invented
  products, films and restaurants are assembled from sentence pools. Factual
  sentences ("It runs for about two hours.") occur under every label, and
  about a quarter of the reviews contain a harder sentence (negation such as
  "not good" or "not disappointing at all", contrast such as "X was great, but
  Y ruined everything", or mixed reviews that balance out), so no single word
  decides the label. Labels are correct by construction (no label noise).
* ``lmforge/data/ner/{train,val}.jsonl`` -- ``{"tokens", "tags"}`` with BIO
  tags for PER, LOC, ORG and DATE, from sentence templates filled with
  invented people and organisations, real city and country names, and dates
  such as "12 March 2021".

Train and val use different seeds and val never repeats a train example.
Running the script twice gives byte-identical files.
"""
import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "lmforge" / "data"
SEEDS = {"train": 31337, "val": 8080}
SIZES = {"sentiment": {"train": 3000, "val": 501}, "ner": {"train": 3000, "val": 500}}
LABELS = ("positive", "negative", "neutral")
HARD_PROB = 0.25


def opts(text):
    """Split a '|'-separated option string into a list."""
    return text.split("|")


# ---------------------------------------------------------------- sentiment
BRANDS = opts("Nimbus|Korvo|Altair|Pebble|Zento|Brisa|Quillon|Tamber")
PRODUCTS = opts("blender|backpack|desk lamp|coffee maker|kettle|keyboard|tent|smartwatch|toaster|speaker")
TITLE_WORDS = (opts("Silent|Crimson|Hidden|Last|Broken|Golden|Quiet|Distant"),
               opts("Harbor|Garden|Signal|Orchard|Winter|Lighthouse|Kingdom|River"))
RESTAURANTS = opts("The Copper Spoon|Little Saffron|Blue Lantern|Casa Lumo|Olive & Ash|The Green Fig|Harbor Table|"
                   "Mama Rosa")
DOMAINS = {
    "product": {
        "thing": lambda rng: f"the {rng.choice(BRANDS)} {rng.choice(PRODUCTS)}",
        "opener": opts("I bought {thing} last month.|I have been using {thing} for a few weeks.|"
                       "My sister gave me {thing} for my birthday.|I ordered {thing} online."),
        "aspect": opts("design|build quality|price|packaging|finish|size|color|material|manual|weight"),
        "pos": opts("Setup took two minutes and everything worked right away.|I use it every day and it still "
                    "works perfectly.|Delivery was quick and the box was well packed.|It feels solid and well "
                    "made.|For the price, it is a great deal."),
        "neg": opts("It stopped working after a week.|One part was already loose when it arrived.|The "
                    "instructions were confusing and customer support never replied.|It arrived scratched and "
                    "dented.|It broke the second time I used it."),
        "fact": opts("It comes in black, white and gray.|The box includes a cable and a short manual.|It weighs "
                     "about two kilograms.|I bought it to replace my old one.|It is the standard model."),
    },
    "movie": {
        "thing": lambda rng: f"The {rng.choice(TITLE_WORDS[0])} {rng.choice(TITLE_WORDS[1])}",
        "opener": opts("We watched {thing} at the cinema.|I finally saw {thing} last night.|"
                       "My friends convinced me to watch {thing}.|I streamed {thing} on Sunday."),
        "aspect": opts("acting|plot|soundtrack|script|camera work|pacing|ending|lead performance|dialogue|humor"),
        "pos": opts("The story kept me on the edge of my seat.|I laughed and cried, sometimes in the same scene.|"
                    "Every scene felt carefully made.|The two leads had wonderful chemistry."),
        "neg": opts("It dragged on for far too long.|I checked my watch every ten minutes.|The special effects "
                    "looked cheap.|The jokes fell flat every single time."),
        "fact": opts("It runs for about two hours.|The film is set in a small fishing town.|It is the director's "
                     "third feature.|The story follows two sisters who run a bakery.|It was released in spring."),
    },
    "restaurant": {
        "thing": lambda rng: rng.choice(RESTAURANTS),
        "opener": opts("We had dinner at {thing} on Friday.|I went to {thing} for lunch with colleagues.|"
                       "We booked a table at {thing} for my mother's birthday.|I tried {thing} last week."),
        "aspect": opts("food|service|pasta|soup|dessert|atmosphere|coffee|wine list|bread|main course"),
        "pos": opts("Our waiter was friendly and attentive.|The portions were generous and the prices fair.|"
                    "The room was cozy and the service was quick.|Everything tasted fresh and homemade."),
        "neg": opts("We waited almost an hour for our main course.|The table was sticky and nobody cleaned it.|"
                    "It was very expensive for tiny portions.|The fish tasted like it had been frozen for weeks."),
        "fact": opts("The menu has about twenty dishes.|It is next to the train station.|We ordered the pasta "
                     "and a green salad.|They take reservations by phone.|The restaurant opened last spring."),
    },
}
POS_ADJ = opts("excellent|superb|wonderful|great|fantastic|lovely|really good|very good|truly impressive|"
               "brilliant|outstanding|first-rate|really enjoyable")
NEG_ADJ = opts("awful|terrible|really disappointing|very poor|dreadful|bland|weak|really bad|pretty bad|"
               "a letdown|mediocre|forgettable")
SENTENCES = {
    "positive": opts("The {aspect} was {pos_adj}.|I loved the {aspect}.|The {aspect} was {pos_adj}, "
                     "and the {aspect2} was even better.|{pos}"),
    "negative": opts("The {aspect} was {neg_adj}.|I hated the {aspect}.|The {aspect} was {neg_adj}, "
                     "and the {aspect2} was no better.|The {aspect} was fine, but the {aspect2} was {neg_adj}.|"
                     "{neg}"),
    "neutral": opts("The {aspect} was fine.|The {aspect} was okay, and so was the {aspect2}.|"
                    "The {aspect} was about what I expected.|{fact}"),
}
HARD = {
    "positive": opts("The {aspect} was not disappointing at all.|I was worried about the {aspect}, but it turned "
                     "out to be {pos_adj}.|The {aspect} was a bit weak, but everything else was {pos_adj}.|"
                     "I did not expect much, but I was pleasantly surprised.|The {aspect} was fine, and the "
                     "{aspect2} was simply {pos_adj}.|I cannot say a single bad thing about it.|It was not "
                     "perfect, but I enjoyed it a lot.|I have no complaints at all."),
    "negative": opts("The {aspect} was not good at all.|I wanted to like the {aspect}, but it was {neg_adj}.|"
                     "The {aspect} was {pos_adj}, but the {aspect2} was so {neg_adj} that it ruined everything.|"
                     "I did not enjoy it one bit.|It sounded great on paper, but it did not work for me.|"
                     "Nothing about it was worth the money.|I loved the {aspect}, but the rest was {neg_adj}.|"
                     "It was not nearly as good as the reviews said."),
    "neutral": opts("The {aspect} was {pos_adj}, but the {aspect2} was {neg_adj}, so it evens out.|"
                    "It was not bad, but not great either.|I did not love it and I did not hate it.|"
                    "Some parts were good and some were not.|I loved the {aspect} but hated the {aspect2}, so I "
                    "am torn.|There were good and bad moments in equal measure."),
}
VERDICTS = {
    "positive": opts("Highly recommended.|I would recommend it to anyone.|I would happily go for it again.|"
                     "Five stars from me.|Absolutely worth it.|I will tell all my friends about it."),
    "negative": opts("I would not recommend it.|Save your money.|One star.|What a waste.|Never again."),
    "neutral": opts("Three stars.|It is worth a try if you are curious.|I have mixed feelings.|"
                    "Average overall.|It was fine, nothing special."),
}


def fill(template, rng, domain, aspect, aspect2):
    """Fill the slots of one review sentence."""
    return template.format(
        aspect=aspect, aspect2=aspect2, pos_adj=rng.choice(POS_ADJ),
        neg_adj=rng.choice(NEG_ADJ), pos=rng.choice(domain["pos"]), neg=rng.choice(domain["neg"]),
        fact=rng.choice(domain["fact"]))


def make_review(rng, label):
    """Opener, optional fact, 1-2 label sentences (maybe a hard one), optional verdict."""
    domain = DOMAINS[rng.choice(sorted(DOMAINS))]
    thing = domain["thing"](rng)
    parts = []
    if rng.random() < 0.25:
        parts.append(rng.choice(domain["opener"]).format(thing=thing))
    if rng.random() < 0.15:
        parts.append(rng.choice(domain["fact"]))
    body = rng.sample(SENTENCES[label], 2 if rng.random() < 0.4 else 1)
    if rng.random() < HARD_PROB:
        body[rng.randrange(len(body))] = rng.choice(HARD[label])
    aspects = rng.sample(domain["aspect"], 2 * len(body))  # no aspect is mentioned twice
    parts += [fill(t, rng, domain, *aspects[2 * i:2 * i + 2]) for i, t in enumerate(body)]
    if rng.random() < 0.4 or len(parts) < 2:
        parts.append(rng.choice(VERDICTS[label]))
    text = " ".join(dict.fromkeys(parts))  # drop a sentence that was drawn twice
    return text[0].upper() + text[1:]


def sentiment_examples(rng, n, exclude=frozenset()):
    """n label-balanced unique reviews (labels cycle, then the list is shuffled)."""
    examples, seen = [], set(exclude)
    while len(examples) < n:
        label = LABELS[len(examples) % len(LABELS)]
        text = make_review(rng, label)
        if text not in seen:
            seen.add(text)
            examples.append({"text": text, "label": label})
    rng.shuffle(examples)
    return examples


# ---------------------------------------------------------------------- NER
FIRST = opts("Anika|Tomas|Lena|Oskar|Mira|Jonah|Priya|Mateo|Elif|Rafael|Sana|Viktor|Noor|Emil|Keira|Hugo|Amara|"
             "Bruno|Ines|Kofi|Yara|Dmitri|Leila|Felix|Zainab|Arno|Chiara|Idris|Maren|Soren")
LAST = opts("Voss|Relling|Okonkwo|Marchetti|Haldane|Quist|Varga|Lindqvist|Adeyemi|Castellan|Brandt|Moreno|"
            "Takeda|Oyelaran|Petrov|Nakashima|Delacroix|Fenwick|Abara|Strand|Kowal|Ferreira|Halloran|"
            "de la Cruz|van der Berg")
CITIES = opts("New York|Buenos Aires|Cape Town|Rio de Janeiro|Hong Kong|San Francisco|Kuala Lumpur|Lisbon|Oslo|"
              "Nairobi|Lima|Hanoi|Toronto|Krakow|Porto|Accra|Seoul|Tunis|Quito|Tallinn|Melbourne|Dublin")
COUNTRIES = opts("South Africa|New Zealand|Costa Rica|Sri Lanka|Chile|Norway|Kenya|Vietnam|Canada|Peru|Egypt|"
                 "Iceland|Mexico|Portugal|Ghana|Finland")
ORG_HEAD = opts("Bluebridge|Northgate|Silverline|Cedar Point|Harborview|Ironwood|Lumen|Brightwater|Falcon|"
                "Redstone|Quantum Oak|Greenvale|Stellar Path|Orion")
ORG_TAIL = opts("Analytics|Systems|Foods|Bank|Motors|Group|Logistics|Health|Energy|Labs|Media|Insurance|"
                "Airlines|Robotics|Textiles")
MONTHS = opts("January|February|March|April|May|June|July|August|September|October|November|December")
WEEKDAYS = opts("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
NER_TEMPLATES = opts(
    "{PER} joined {ORG} in {PERIOD} .|On {DAY} , {PER} flew to {CITY} .|{ORG} opened an office in {LOC} .|"
    "{PER} said the deal with {ORG} was done .|{PER} now works for {ORG} .|The conference in {CITY} started on "
    "{DAY} .|{PER} and {PER} met in {CITY} .|{ORG} hired {PER} last year .|Heavy rain hit {LOC} on {DAY} .|"
    "{PER} was born in {CITY} in {PERIOD} .|Shares of {ORG} rose sharply .|The museum in {CITY} reopened on "
    "{DAY} .|{PER} has worked for {ORG} since {PERIOD} .|Students from {ORG} visited {LOC} .|Dr. {PER} spoke "
    "at {ORG} .|We had lunch with {PER} in {CITY} .|{ORG} and {ORG} signed a deal on {DAY} .|The train from "
    "{CITY} to {CITY} was late .|{PER} moved to {LOC} in {PERIOD} .|In {PERIOD} , {ORG} built a factory near "
    "{CITY} .|The weather was sunny all week .|Nobody expected the meeting to last so long .|{PER} won a chess "
    "prize in {CITY} .|{ORG} published a report on {DAY} .|{PER} thanked the volunteers from {ORG} .|The "
    "festival in {CITY} attracts many visitors .|Ms. {SURNAME} visited {LOC} on {DAY} .|{PER} told "
    "reporters that {ORG} would expand .|Flights to {CITY} resumed on {DAY} .|{PER} 's book about {LOC} came "
    "out in {PERIOD} .|Prices went up again this month .|Mr. {SURNAME} said the bridge opened in {PERIOD} .")


def person(rng):
    """'Anika Voss', 'Anika', or 'Anika J. Voss'."""
    r = rng.random()
    if r < 0.2:
        return rng.choice(FIRST)
    middle = f" {rng.choice('ABCDEFGHJKLMNPRST')}." if r > 0.95 else ""
    return f"{rng.choice(FIRST)}{middle} {rng.choice(LAST)}"


def organisation(rng):
    """'Lumen Labs', 'Lumen Labs Ltd', 'the University of Oslo' or 'the Oslo City Council'."""
    r = rng.random()
    if r < 0.15:
        return f"the University of {rng.choice(CITIES)}"
    if r < 0.25:
        return f"the {rng.choice(CITIES)} City Council"
    return f"{rng.choice(ORG_HEAD)} {rng.choice(ORG_TAIL)}" + (" Ltd" if r > 0.9 else "")


def day_date(rng):
    """A specific day: '12 March 2021', '1 June' or 'Monday'."""
    r = rng.random()
    if r < 0.15:
        return rng.choice(WEEKDAYS)
    day = f"{rng.randint(1, 28)} {rng.choice(MONTHS)}"
    return day if r < 0.3 else f"{day} {rng.randint(1990, 2025)}"


def period_date(rng):
    """A month or year: 'March 2021' or '2019'."""
    year = str(rng.randint(1970, 2025))
    return f"{rng.choice(MONTHS)} {year}" if rng.random() < 0.5 else year


ENTITY_MAKERS = {
    "PER": ("PER", person), "SURNAME": ("PER", lambda rng: rng.choice(LAST)),
    "LOC": ("LOC", lambda rng: rng.choice(CITIES if rng.random() < 0.6 else COUNTRIES)),
    "CITY": ("LOC", lambda rng: rng.choice(CITIES)),
    "ORG": ("ORG", organisation), "DAY": ("DATE", day_date), "PERIOD": ("DATE", period_date),
}


def make_ner_example(rng):
    """Fill one template; each entity's words get B-/I- tags, other words (and a leading 'the') O."""
    tokens, tags, used = [], [], set()
    for word in rng.choice(NER_TEMPLATES).split():
        if word.startswith("{") and word.endswith("}"):
            label, maker = ENTITY_MAKERS[word[1:-1]]
            entity = maker(rng)
            while entity in used:  # e.g. never "from Oslo to Oslo"
                entity = maker(rng)
            used.add(entity)
            words = entity.split()
            if words[0] == "the":
                tokens.append("the")
                tags.append("O")
                words = words[1:]
            tokens += words
            tags += [f"B-{label}"] + [f"I-{label}"] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return {"tokens": tokens, "tags": tags}


def ner_examples(rng, n, exclude=frozenset()):
    """n unique NER examples not in exclude (compared by their token sequence)."""
    examples, seen = [], set(exclude)
    while len(examples) < n:
        example = make_ner_example(rng)
        key = " ".join(example["tokens"])
        if key not in seen:
            seen.add(key)
            examples.append(example)
    return examples


# --------------------------------------------------------------------- main
def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def main():
    sizes = SIZES["sentiment"]
    train = sentiment_examples(random.Random(SEEDS["train"]), sizes["train"])
    val = sentiment_examples(random.Random(SEEDS["val"]), sizes["val"], {r["text"] for r in train})
    write_jsonl(DATA_DIR / "sentiment" / "train.jsonl", train)
    write_jsonl(DATA_DIR / "sentiment" / "val.jsonl", val)
    sizes = SIZES["ner"]
    train = ner_examples(random.Random(SEEDS["train"]), sizes["train"])
    val = ner_examples(random.Random(SEEDS["val"]), sizes["val"], {" ".join(r["tokens"]) for r in train})
    write_jsonl(DATA_DIR / "ner" / "train.jsonl", train)
    write_jsonl(DATA_DIR / "ner" / "val.jsonl", val)
    print(f"wrote sentiment and NER data under {DATA_DIR}")


if __name__ == "__main__":
    main()
