"""A small knowledge base of everyday facts: what `speech_qa` asks, what `chat` answers, and what the
text corpus states.

Each `Fact` has a stable `key`, question wordings, a short closed answer and declarative statements.
Facts are split by key (`fact_split`): the corpus states every fact (so the answer of a held-out
question is learnable from pretraining text), but only train facts appear as question -> answer
pairs anywhere in the train splits. A held-out question therefore tests transfer from text
knowledge to a spoken or typed question, never recall of a seen pair.
"""

from dataclasses import dataclass

from .splits import stable_split

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


@dataclass(frozen=True)
class Fact:
    key: str
    questions: tuple[str, ...]  # lowercase, with the question mark
    answer: str  # short closed answer, lowercase unless a proper noun
    statements: tuple[str, ...]  # full sentences, capitalised and punctuated


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def number_word(n: int) -> str:
    if 0 <= n < len(NUMBER_WORDS):
        return NUMBER_WORDS[n]
    tens = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
    if 20 <= n < 100:
        return tens[n // 10] + ("" if n % 10 == 0 else " " + NUMBER_WORDS[n % 10])
    raise ValueError(f"number_word covers 0-99, got {n}")


_COLOURS = {
    "the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a banana": "yellow", "a tomato": "red",
    "a carrot": "orange", "a lemon": "yellow", "milk": "white", "a frog": "green", "a strawberry": "red",
    "chocolate": "brown", "a pumpkin": "orange", "the sun": "yellow", "a crow": "black", "a cherry": "red",
    "a leaf": "green", "the sea": "blue", "a cloud": "white", "an elephant": "gray", "a flamingo": "pink",
    "a plum": "purple", "an eggplant": "purple", "a fire truck": "red", "a polar bear": "white", "a lime": "green",
    "a pig": "pink", "a school bus": "yellow", "salt": "white", "the night sky": "black", "a cucumber": "green",
    "a raven": "black", "a rose": "red", "an orange": "orange", "a violet": "purple", "a bear": "brown",
}
_SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa", "lion": "roar", "owl": "hoot",
    "pig": "oink", "horse": "neigh", "frog": "ribbit", "bee": "buzz", "snake": "hiss", "mouse": "squeak",
    "wolf": "howl", "donkey": "hee haw", "chick": "cheep",
}
_LEGS = {
    "dog": 4, "cat": 4, "bird": 2, "spider": 8, "ant": 6, "horse": 4, "chicken": 2, "cow": 4, "bee": 6,
    "duck": 2, "person": 2, "beetle": 6, "frog": 4, "lion": 4, "owl": 2, "crab": 10, "fly": 6, "goat": 4,
}
_COUNTS = {  # question -> (answer, statement)
    "how many days are in a week?": (7, "There are seven days in a week."),
    "how many months are in a year?": (12, "There are twelve months in a year."),
    "how many sides does a triangle have?": (3, "A triangle has three sides."),
    "how many sides does a square have?": (4, "A square has four sides."),
    "how many sides does a pentagon have?": (5, "A pentagon has five sides."),
    "how many sides does a hexagon have?": (6, "A hexagon has six sides."),
    "how many sides does an octagon have?": (8, "An octagon has eight sides."),
    "how many wheels does a bicycle have?": (2, "A bicycle has two wheels."),
    "how many wheels does a car have?": (4, "A car has four wheels."),
    "how many wheels does a tricycle have?": (3, "A tricycle has three wheels."),
    "how many hours are in a day?": (24, "There are twenty four hours in a day."),
    "how many minutes are in an hour?": (60, "There are sixty minutes in an hour."),
    "how many fingers are on one hand?": (5, "There are five fingers on one hand."),
    "how many seasons are in a year?": (4, "There are four seasons in a year."),
    "how many eyes does a person have?": (2, "A person has two eyes."),
    "how many corners does a square have?": (4, "A square has four corners."),
    "how many points does a star have?": (5, "A star usually has five points."),
    "how many players are in a football team?": (11, "A football team has eleven players."),
}
_OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"), ("happy", "sad"),
    ("open", "closed"), ("light", "dark"), ("old", "new"), ("wet", "dry"), ("full", "empty"), ("early", "late"),
    ("left", "right"), ("in", "out"), ("hard", "soft"), ("tall", "short"), ("loud", "quiet"), ("clean", "dirty"),
    ("black", "white"), ("push", "pull"), ("near", "far"), ("strong", "weak"), ("thick", "thin"),
    ("first", "last"), ("top", "bottom"), ("front", "back"), ("high", "low"), ("summer", "winter"),
    ("win", "lose"), ("rich", "poor"),
)
_CAPITALS = {
    "france": "Paris", "italy": "Rome", "spain": "Madrid", "germany": "Berlin", "japan": "Tokyo",
    "england": "London", "egypt": "Cairo", "russia": "Moscow", "china": "Beijing", "canada": "Ottawa",
    "greece": "Athens", "ireland": "Dublin", "portugal": "Lisbon", "norway": "Oslo", "sweden": "Stockholm",
    "kenya": "Nairobi", "peru": "Lima", "austria": "Vienna", "poland": "Warsaw", "australia": "Canberra",
    "turkey": "Ankara", "thailand": "Bangkok", "cuba": "Havana", "finland": "Helsinki",
}
_BABIES = {
    "dog": "puppy", "cat": "kitten", "cow": "calf", "sheep": "lamb", "horse": "foal", "duck": "duckling",
    "frog": "tadpole", "goat": "kid", "bear": "cub", "chicken": "chick", "pig": "piglet", "kangaroo": "joey",
    "swan": "cygnet", "deer": "fawn", "lion": "cub",
}
_HOMES = {
    "bird": "a nest", "bee": "a hive", "spider": "a web", "rabbit": "a burrow", "dog": "a kennel",
    "horse": "a stable", "bear": "a cave", "fox": "a den", "fish": "the water", "pig": "a sty",
}
_WORLD = {  # question -> (answer, statement)
    "what do bees make?": ("honey", "Bees make honey."),
    "what do cows give us?": ("milk", "Cows give us milk."),
    "what do chickens lay?": ("eggs", "Chickens lay eggs."),
    "what do you use to cut paper?": ("scissors", "You use scissors to cut paper."),
    "what do you write with?": ("a pencil", "You write with a pencil."),
    "what do you eat soup with?": ("a spoon", "You eat soup with a spoon."),
    "what falls from the clouds?": ("rain", "Rain falls from the clouds."),
    "what do you wear on your feet?": ("shoes", "You wear shoes on your feet."),
    "what do you wear on your head?": ("a hat", "You wear a hat on your head."),
    "what do you see with?": ("your eyes", "You see with your eyes."),
    "what do you hear with?": ("your ears", "You hear with your ears."),
    "what do we breathe?": ("air", "We breathe air."),
    "what shines in the sky at night?": ("the moon", "The moon shines in the sky at night."),
    "what is frozen water called?": ("ice", "Frozen water is called ice."),
    "what do plants need to grow?": ("water", "Plants need water to grow."),
    "what do you use to unlock a door?": ("a key", "You use a key to unlock a door."),
    "what do you sleep in?": ("a bed", "You sleep in a bed."),
    "what do you use to tell the time?": ("a clock", "You use a clock to tell the time."),
    "where do you buy bread?": ("a bakery", "You buy bread at a bakery."),
    "where do you borrow books?": ("a library", "You borrow books from a library."),
}
_MIXES = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple",
          ("red", "white"): "pink", ("black", "white"): "gray"}


def _colour_facts():
    for thing, colour in _COLOURS.items():
        bare = thing.split(" ", 1)[1] if thing.startswith(("a ", "an ")) else thing
        yield Fact(
            f"colour:{bare}",
            (f"what colour is {thing}?", f"what color is {thing}?", f"which colour is {thing}?"),
            colour,
            (_cap(f"{thing} is {colour}."), _cap(f"the colour of {bare} is {colour}.")),
        )


def _animal_facts():
    for animal, sound in _SOUNDS.items():
        yield Fact(f"sound:{animal}", (f"what does a {animal} say?", f"what sound does a {animal} make?"), sound,
                   (f"A {animal} says {sound}.", f"The {animal} goes {sound}."))
    for animal, legs in _LEGS.items():
        yield Fact(f"legs:{animal}", (f"how many legs does a {animal} have?", f"how many legs has a {animal} got?"),
                   number_word(legs), (f"A {animal} has {number_word(legs)} legs.",))
    for animal, baby in _BABIES.items():
        yield Fact(f"baby:{animal}", (f"what is a baby {animal} called?", f"what do you call a baby {animal}?"), baby,
                   (f"A baby {animal} is called a {baby}.",))
    for animal, home in _HOMES.items():
        animals = {"fox": "foxes", "fish": "fish"}.get(animal, animal + "s")
        yield Fact(f"home:{animal}", (f"where does a {animal} live?", f"where do {animals} live?"), home,
                   (f"A {animal} lives in {home}.",))


def _word_facts():
    for first, second in _OPPOSITES:
        for a, b in ((first, second), (second, first)):
            yield Fact(f"opposite:{a}", (f"what is the opposite of {a}?", f"what is the opposite of the word {a}?"), b,
                       (f"The opposite of {a} is {b}.",))
    for sequence, kind in ((DAYS, "day"), (MONTHS, "month")):
        names = [name.capitalize() for name in sequence]
        for before, after in zip(names, names[1:]):
            questions = (f"what {kind} comes after {before}?", f"which {kind} is after {before}?")
            yield Fact(f"after:{before.lower()}", questions, after,
                       (_cap(f"{after} comes after {before}."), _cap(f"after {before} comes {after}.")))
            yield Fact(f"before:{after.lower()}", (f"what {kind} comes before {after}?",), before,
                       (_cap(f"{before} comes before {after}."),))
    for n in range(0, 20):
        yield Fact(f"next:{n}", (f"what number comes after {number_word(n)}?", f"what comes after {number_word(n)}?"),
                   number_word(n + 1), (_cap(f"{number_word(n + 1)} comes after {number_word(n)}."),))
    letters = "abcdefghijklmnopqrstuvwxyz"
    for before, after in zip(letters, letters[1:]):
        yield Fact(f"letter:{before}", (f"what letter comes after {before}?",), after,
                   (f"The letter {after} comes after {before}.",))


def _world_facts():
    for question, (n, statement) in _COUNTS.items():
        yield Fact(f"count:{question}", (question,), number_word(n), (statement,))
    for question, (answer, statement) in _WORLD.items():
        yield Fact(f"world:{question}", (question,), answer, (statement,))
    for country, city in _CAPITALS.items():
        name = country.capitalize()
        yield Fact(f"capital:{country}", (f"what is the capital of {name}?", f"which city is the capital of {name}?"),
                   city, (f"The capital of {name} is {city}.", f"{city} is the capital of {name}."))
    for (a, b), mixed in _MIXES.items():
        yield Fact(f"mix:{a}+{b}", (f"what colour do you get when you mix {a} and {b}?",
                                    f"what color do you get if you mix {b} and {a}?"), mixed,
                   (_cap(f"{a} and {b} make {mixed}."), _cap(f"if you mix {a} and {b} you get {mixed}.")))


def _arithmetic_facts():
    for a in range(1, 10):
        for b in range(1, 10):
            yield Fact(f"plus:{a}+{b}", (f"what is {number_word(a)} plus {number_word(b)}?",
                                         f"what is {number_word(a)} and {number_word(b)}?"),
                       number_word(a + b), (_cap(f"{number_word(a)} plus {number_word(b)} is {number_word(a + b)}."),
                                            f"{a} + {b} = {a + b}."))
    for a in range(2, 11):
        for b in range(1, a):
            yield Fact(f"minus:{a}-{b}", (f"what is {number_word(a)} minus {number_word(b)}?",
                                          f"what is {number_word(a)} take away {number_word(b)}?"),
                       number_word(a - b), (_cap(f"{number_word(a)} minus {number_word(b)} is {number_word(a - b)}."),
                                            f"{a} - {b} = {a - b}."))


def all_facts() -> list[Fact]:
    """Every fact, in a fixed order."""
    facts = [*_colour_facts(), *_animal_facts(), *_word_facts(), *_world_facts(), *_arithmetic_facts()]
    keys = [f.key for f in facts]
    if len(set(keys)) != len(keys):
        raise RuntimeError("fact keys must be unique")
    return facts


def fact_split(fact: Fact) -> str:
    """"train" (80%), "validation" (10%) or "test" (10%), fixed by the fact's key."""
    return stable_split(f"fact:{fact.key}", (0.8, 0.1, 0.1))
