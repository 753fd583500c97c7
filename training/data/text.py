"""Sentences, ChatterBot dialogs and the pretraining corpus of the built-in dataset (chat tasks: `chat.py`).

Sentences. `SENTENCE_TEMPLATES` are families of English sentence templates (everyday actions,
scenes, objects, animals, questions, commands, numbers and times, weather and feelings) over a
vocabulary of a few hundred words, plus lines of the ChatterBot corpus. Each generated sentence has
a split (`sentence_split`) fixed by its content, so train / validation / test never share a
sentence, and held-out material goes beyond new word sequences:
  - templates marked `heldout` produce validation/test sentences only (unseen sentence structures);
  - 10% of each template's word combinations (its `combo`, e.g. subject + verb) are held out
    (unseen combinations of seen words);
  - of the rest, sentences are split 90 / 5 / 5 by their text.

ChatterBot corpus. The English YAML dialogs of the `chatterbot-corpus` pip package (v1.3.x,
(c) 2017 Gunther Cox, BSD 3-Clause licence: redistribution and use permitted with the copyright
notice kept; the notice is reproduced in this docstring). Used for chat conversations, for short
lines to speak (ASCII, 2-8 words, at most 60 characters, no digits) and in the corpus. A
conversation and its lines share one split, fixed by its first line. Optional: without the
package the built-in dataset is built from the generators alone (so its content differs).

Corpus. `corpus_documents` mixes short documents (runs of sentences, fact statements, fact
questions with answers, scene descriptions, dialogs, chat turns, day/month/number lists); for the
train split every unit and document passes `HeldoutFilter`, built from every validation / test
sentence, caption, question and user turn (compared by `content_key`, which keeps digits).

    Copyright (c) 2017, Gunther Cox. All rights reserved. Redistribution and use in source and
    binary forms, with or without modification, are permitted provided that the conditions of the
    BSD 3-Clause licence are met (https://github.com/gunthercox/chatterbot-corpus).
"""

import functools
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .facts import DAYS, MONTHS, number_word
from .scenes import COLOURS, SHAPES, plural
from .speech import normalize_transcript
from .splits import SPLITS, stable_fraction, stable_split

PEOPLE = ("the teacher", "my brother", "my sister", "the doctor", "a little girl", "a young boy", "the old man",
          "our neighbour", "the farmer", "my friend", "the baker", "the driver", "the nurse", "the pilot",
          "my mother", "my father", "the singer", "the student", "the cook", "grandma", "the police officer",
          "the painter", "a tall woman", "the boy next door", "my uncle", "the waiter")
GROUPS = ("the children", "my parents", "the students", "our friends", "the workers", "the players",
          "my cousins", "the neighbours", "the tourists", "the twins", "we", "they")
# (third person, base form, past tense, objects)
VERBS = (
    ("eats", "eat", "ate", ("some bread", "an apple", "the cake", "hot soup", "a sandwich", "rice", "a banana")),
    ("drinks", "drink", "drank", ("some water", "a cup of tea", "cold milk", "orange juice", "hot chocolate")),
    ("reads", "read", "read", ("a book", "the newspaper", "a letter", "a story", "the map", "a poem")),
    ("opens", "open", "opened", ("the door", "the window", "a box", "the gate", "the bottle")),
    ("paints", "paint", "painted", ("the fence", "a picture", "the wall", "a flower", "the old house")),
    ("carries", "carry", "carried", ("a heavy bag", "the basket", "a big box", "some water", "the chairs")),
    ("finds", "find", "found", ("a key", "a coin", "the lost cat", "a red ball", "an old map")),
    ("washes", "wash", "washed", ("the dishes", "the car", "the windows", "a shirt", "the dog")),
    ("cooks", "cook", "cooked", ("dinner", "some rice", "a pot of soup", "breakfast", "pancakes")),
    ("plays", "play", "played", ("football", "the piano", "chess", "a game", "the guitar")),
    ("watches", "watch", "watched", ("the birds", "a film", "the rain", "the stars", "the game")),
    ("buys", "buy", "bought", ("some bread", "a new hat", "fresh fruit", "a ticket", "two apples")),
    ("writes", "write", "wrote", ("a letter", "a song", "a short story", "the answer", "a list")),
    ("cleans", "clean", "cleaned", ("the room", "the kitchen", "the table", "the floor", "the bathroom")),
    ("feeds", "feed", "fed", ("the cat", "the ducks", "the horses", "the fish", "the baby")),
    ("visits", "visit", "visited", ("the museum", "grandma", "the zoo", "a friend", "the market")),
    ("fixes", "fix", "fixed", ("the bike", "the radio", "the roof", "the clock", "the fence")),
    ("draws", "draw", "drew", ("a cat", "a map", "a circle", "a house", "a tree")),
    ("throws", "throw", "threw", ("the ball", "a stone", "the frisbee", "a paper plane")),
    ("needs", "need", "needed", ("a new coat", "some help", "more time", "a pencil", "a break")),
)
INTRANSITIVE = (("sleeps", "sleep", "slept"), ("runs", "run", "ran"), ("laughs", "laugh", "laughed"),
                ("waits", "wait", "waited"), ("works", "work", "worked"), ("swims", "swim", "swam"),
                ("dances", "dance", "danced"), ("sits", "sit", "sat"), ("walks", "walk", "walked"),
                ("sings", "sing", "sang"), ("rests", "rest", "rested"), ("plays", "play", "played"))
PLACES = ("in the kitchen", "in the garden", "at school", "at the park", "on the bus", "in the library", "at home",
          "by the river", "in the forest", "at the beach", "in the city", "on the farm", "at the station",
          "in the market", "near the lake", "at the office", "in the classroom", "on the hill", "at the zoo",
          "in the shop")
TIMES = ("every morning", "after lunch", "on Sunday", "in the evening", "at night", "before dinner", "on Monday",
         "every day", "in the summer", "in the winter", "today", "yesterday", "right now", "at noon",
         "on the weekend", "this afternoon")
THINGS = ("ball", "book", "cup", "box", "hat", "chair", "table", "lamp", "key", "bag", "pencil", "phone", "bottle",
          "clock", "kite", "shoe", "umbrella", "window", "door", "car", "bicycle", "boat", "train", "flower", "tree",
          "apple", "plate", "spoon", "coat", "basket", "candle", "mirror", "blanket", "bucket", "ladder", "radio")
ADJECTIVES = ("big", "small", "old", "new", "heavy", "long", "short", "soft", "clean", "dirty", "bright", "dark",
              "warm", "cold", "empty", "full", "round", "shiny", "broken", "tiny", "huge", "quiet", "noisy", "strange",
              "beautiful", "wooden")
ANIMALS = ("dog", "cat", "bird", "horse", "cow", "duck", "rabbit", "mouse", "sheep", "frog", "fox", "lion", "bear",
           "monkey", "tiger", "goat", "owl", "pig", "deer", "turtle")
ANIMAL_ADJECTIVES = ("big", "small", "old", "young", "tiny", "huge", "happy", "sleepy", "hungry", "brown", "white",
                     "black", "clever", "quiet", "noisy", "strange", "beautiful", "little", "wild", "friendly")
ANIMAL_ACTIONS = ("sleeping under a tree", "running in the field", "eating grass", "swimming in the pond",
                  "playing with a ball", "sitting on the wall", "looking at the moon", "hiding behind the door",
                  "jumping over the fence", "drinking from the river")
FURNITURE = ("table", "bed", "chair", "sofa", "desk", "shelf", "bench")
WEATHER = ("sunny", "rainy", "cold", "warm", "windy", "cloudy", "foggy", "hot", "cold and windy", "warm and sunny",
           "wet and grey", "snowy")
FEELINGS = ("happy", "tired", "hungry", "excited", "sleepy", "sad", "calm", "nervous", "cheerful", "bored",
            "thirsty", "proud")
FOODS = ("apples", "pizza", "rice", "soup", "bananas", "cheese", "chocolate", "carrots", "fish", "ice cream",
         "noodles", "grapes", "cookies", "tomatoes", "pancakes")
HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def _pick(rng: np.random.Generator, items):
    return items[rng.integers(len(items))]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _head(phrase: str) -> str:
    return phrase.split()[-1]


@dataclass(frozen=True)
class SentenceTemplate:
    """`make(rng) -> (sentence, combo)`: a capitalised, punctuated sentence and the word combination
    that decides whether it is held out (`None`: no combination hold-out)."""

    name: str
    family: str
    make: Callable[[np.random.Generator], tuple[str, str | None]]
    heldout: bool = False


def _everyday_present(rng):
    third, _, _, objects = _pick(rng, VERBS)
    subject, obj = _pick(rng, PEOPLE), _pick(rng, objects)
    tail = _pick(rng, ("", " " + _pick(rng, PLACES), " " + _pick(rng, TIMES)))
    return f"{subject} {third} {obj}{tail}.", f"{_head(subject)}|{third}"


def _everyday_plural(rng):
    _, base, _, objects = _pick(rng, VERBS)
    subject = _pick(rng, GROUPS)
    return f"{subject} {base} {_pick(rng, objects)} {_pick(rng, PLACES)}.", f"{_head(subject)}|{base}"


def _everyday_past(rng):
    _, _, past, objects = _pick(rng, VERBS)
    subject = _pick(rng, PEOPLE + GROUPS)
    return f"{subject} {past} {_pick(rng, objects)} {_pick(rng, TIMES)}.", f"{_head(subject)}|{past}"


def _everyday_intransitive(rng):
    third, base, past = _pick(rng, INTRANSITIVE)
    if rng.uniform() < 0.5:
        subject, verb = _pick(rng, PEOPLE), third
    else:
        subject, verb = _pick(rng, GROUPS), base
    return f"{subject} {verb} {_pick(rng, PLACES)}.", f"{_head(subject)}|{base}"


def _everyday_fronted(rng):  # held out: a time phrase first
    third, _, _, objects = _pick(rng, VERBS)
    return f"{_pick(rng, TIMES)}, {_pick(rng, PEOPLE)} {third} {_pick(rng, objects)}.", None


def _everyday_wants(rng):  # held out: a catenative verb
    _, base, _, objects = _pick(rng, VERBS)
    subject = _pick(rng, PEOPLE)
    return f"{subject} wants to {base} {_pick(rng, objects)}.", None


def _scene_position(rng):
    colour, shape = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES)
    where = _pick(rng, ("on the left", "on the right", "at the top", "at the bottom", "in the middle"))
    return f"the {colour} {shape} is {where}.", f"{colour}|{shape}"


def _scene_count(rng):
    colour, shape = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES)
    n = int(rng.integers(2, 8))
    lead = _pick(rng, ("there are", "I can see", "she drew", "we found"))
    return f"{lead} {number_word(n)} {colour} {plural(shape)}.", f"{colour}|{shape}"


def _scene_size(rng):
    colour, shape = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES)
    size = _pick(rng, ("small", "large", "big", "tiny"))
    return f"{_pick(rng, ('look at', 'I like', 'draw', 'find'))} the {size} {colour} {shape}.", f"{colour}|{shape}"


def _scene_pair(rng):  # held out: two objects related
    (c1, c2), (s1, s2) = rng.choice(tuple(COLOURS), 2, replace=False), rng.choice(SHAPES, 2, replace=False)
    relation = _pick(rng, ("is next to", "is above", "is below", "is bigger than"))
    return f"the {c1} {s1} {relation} the {c2} {s2}.", None


def _object_location(rng):
    adjective, thing = _pick(rng, ADJECTIVES), _pick(rng, THINGS)
    where = _pick(rng, ("on the", "under the", "next to the", "behind the")) + " " + _pick(rng, FURNITURE)
    return f"the {adjective} {thing} is {where}.", f"{adjective}|{thing}"


def _object_have(rng):
    colour, thing = _pick(rng, tuple(COLOURS)), _pick(rng, THINGS)
    n = int(rng.integers(2, 10))
    lead = _pick(rng, ("I have", "she has", "he bought", "we need", "they sold"))
    noun = thing + "es" if thing.endswith(("s", "x", "sh", "ch")) else thing + "s"
    return f"{lead} {number_word(n)} {colour} {noun}.", f"{colour}|{thing}"


def _object_describe(rng):
    adjective, thing = _pick(rng, ADJECTIVES), _pick(rng, THINGS)
    degree = _pick(rng, ("very", "quite", "really", "so"))
    return f"this {thing} is {degree} {adjective}.", f"{adjective}|{thing}"


def _object_question(rng):  # held out
    adjective, thing = _pick(rng, ADJECTIVES), _pick(rng, THINGS)
    return f"where did you put the {adjective} {thing}?", None


def _animal_action(rng):
    adjective, animal = _pick(rng, ANIMAL_ADJECTIVES), _pick(rng, ANIMALS)
    return f"{_a(adjective)} {animal} is {_pick(rng, ANIMAL_ACTIONS)}.", f"{adjective}|{animal}"


def _animal_place(rng):
    animal = _pick(rng, ANIMALS)
    third = _pick(rng, ("sleeps", "runs", "waits", "swims", "sits", "walks", "plays", "rests", "hides"))
    return f"the {animal} {third} {_pick(rng, PLACES)}.", f"{animal}|{third}"


def _animal_seen(rng):  # held out
    return f"have you ever seen {_a(_pick(rng, ANIMAL_ADJECTIVES))} {_pick(rng, ANIMALS)}?", None


def _question_where(rng):
    return f"where is the {_pick(rng, ('', 'big ', 'old ', 'new ', 'red ', 'blue '))}{_pick(rng, THINGS)}?", None


def _question_can(rng):
    _, base, _, objects = _pick(rng, VERBS)
    return f"{_pick(rng, ('can you', 'could you', 'will you', 'did you'))} {base} {_pick(rng, objects)}?", base


def _question_like(rng):
    food = _pick(rng, FOODS)
    return f"{_pick(rng, ('do you like', 'does she like', 'do they eat', 'would you like some'))} {food}?", food


def _question_why(rng):  # held out
    return f"why is the {_pick(rng, THINGS)} so {_pick(rng, ADJECTIVES)}?", None


def _command_please(rng):
    _, base, _, objects = _pick(rng, VERBS)
    return f"please {base} {_pick(rng, objects)}{_pick(rng, ('', ' now', ' later', ' for me'))}.", base


def _command_put(rng):
    thing, furniture = _pick(rng, THINGS), _pick(rng, FURNITURE)
    return f"put the {thing} {_pick(rng, ('on', 'under', 'next to'))} the {furniture}.", f"{thing}|{furniture}"


def _command_turn(rng):
    landmark = _pick(rng, ("corner", "bank", "church", "traffic lights", "school", "big tree", "bridge"))
    return f"turn {_pick(rng, ('left', 'right'))} at the {landmark}.", None


def _command_lets(rng):  # held out
    _, base, _, objects = _pick(rng, VERBS)
    return f"let's {base} {_pick(rng, objects)} {_pick(rng, TIMES)}.", None


def _time_clock(rng):
    hour = _pick(rng, HOURS)
    return f"{_pick(rng, ('it is', 'the film starts at', 'lunch is at', 'the shop opens at'))} {hour} o'clock.", None


def _time_train(rng):
    hour, minutes = _pick(rng, HOURS), _pick(rng, ("fifteen", "thirty", "forty five", "ten", "twenty"))
    return f"the {_pick(rng, ('train', 'bus', 'plane', 'boat'))} leaves at {hour} {minutes}.", None


def _time_calendar(rng):
    if rng.uniform() < 0.5:
        return f"my birthday is in {_pick(rng, MONTHS).capitalize()}.", None
    return f"the {_pick(rng, ('market', 'class', 'party', 'game'))} is on {_pick(rng, DAYS).capitalize()}.", None


def _time_waited(rng):  # held out
    return f"we waited for {number_word(int(rng.integers(2, 60)))} minutes.", None


def _weather(rng):
    weather = _pick(rng, WEATHER)
    return f"it is {weather} {_pick(rng, ('today', 'this morning', 'outside', 'in the city'))}.", weather


def _feeling(rng):
    feeling = _pick(rng, FEELINGS)
    subject, verb = _pick(rng, (("I", "feel"), ("she", "looks"), ("he", "seems"), ("we", "are"), ("the baby", "is")))
    return f"{subject} {verb} {feeling} {_pick(rng, TIMES)}.", f"{subject}|{feeling}"


def _weather_tomorrow(rng):  # held out
    return f"the weather will be {_pick(rng, WEATHER)} tomorrow.", None


SENTENCE_TEMPLATES: tuple[SentenceTemplate, ...] = (
    SentenceTemplate("everyday_present", "everyday", _everyday_present),
    SentenceTemplate("everyday_plural", "everyday", _everyday_plural),
    SentenceTemplate("everyday_past", "everyday", _everyday_past),
    SentenceTemplate("everyday_intransitive", "everyday", _everyday_intransitive),
    SentenceTemplate("everyday_fronted", "everyday", _everyday_fronted, heldout=True),
    SentenceTemplate("everyday_wants", "everyday", _everyday_wants, heldout=True),
    SentenceTemplate("scene_position", "scene", _scene_position),
    SentenceTemplate("scene_count", "scene", _scene_count),
    SentenceTemplate("scene_size", "scene", _scene_size),
    SentenceTemplate("scene_pair", "scene", _scene_pair, heldout=True),
    SentenceTemplate("object_location", "objects", _object_location),
    SentenceTemplate("object_have", "objects", _object_have),
    SentenceTemplate("object_describe", "objects", _object_describe),
    SentenceTemplate("object_question", "objects", _object_question, heldout=True),
    SentenceTemplate("animal_action", "animals", _animal_action),
    SentenceTemplate("animal_place", "animals", _animal_place),
    SentenceTemplate("animal_seen", "animals", _animal_seen, heldout=True),
    SentenceTemplate("question_where", "questions", _question_where),
    SentenceTemplate("question_can", "questions", _question_can),
    SentenceTemplate("question_like", "questions", _question_like),
    SentenceTemplate("question_why", "questions", _question_why, heldout=True),
    SentenceTemplate("command_please", "commands", _command_please),
    SentenceTemplate("command_put", "commands", _command_put),
    SentenceTemplate("command_turn", "commands", _command_turn),
    SentenceTemplate("command_lets", "commands", _command_lets, heldout=True),
    SentenceTemplate("time_clock", "time", _time_clock),
    SentenceTemplate("time_train", "time", _time_train),
    SentenceTemplate("time_calendar", "time", _time_calendar),
    SentenceTemplate("time_waited", "time", _time_waited, heldout=True),
    SentenceTemplate("weather", "weather", _weather),
    SentenceTemplate("feeling", "weather", _feeling),
    SentenceTemplate("weather_tomorrow", "weather", _weather_tomorrow, heldout=True),
)
HELDOUT_COMBO_FRACTION = 0.1


def capitalize(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:] if sentence else sentence


def sentence_split(text: str, template: SentenceTemplate | None = None, combo: str | None = None) -> str:
    """The split of a generated sentence (see the module docstring); `text` in any casing."""
    key = normalize_transcript(text)
    if template is not None and template.heldout:
        return "validation" if stable_fraction("heldout:" + key) < 0.5 else "test"
    combo_key = f"combo:{template.name}:{combo}" if template is not None and combo is not None else None
    if combo_key is not None and stable_fraction(combo_key) < HELDOUT_COMBO_FRACTION:
        return "validation" if stable_fraction("heldout:" + key) < 0.5 else "test"
    return stable_split("sentence:" + key, (0.9, 0.05, 0.05))


# ---------------------------------------------------------------- ChatterBot


@functools.lru_cache(maxsize=4)
def _chatterbot_conversations(min_turns: int) -> tuple[tuple[str, ...], ...]:
    try:
        import chatterbot_corpus
        import yaml
    except ImportError:
        return []
    folder = os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data", "english")
    conversations = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".yml") or name in ("politics.yml", "gossip.yml"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for dialog in data.get("conversations", []):
            turns = [" ".join(str(t).split()) for t in dialog if t is not None]
            if len(turns) >= min_turns and all(t and t.isascii() for t in turns):
                conversations.append(tuple(turns))
    return tuple(conversations)


def load_chatterbot_conversations(min_turns: int = 2) -> list[list[str]]:
    """The English ChatterBot dialogs (ASCII turns only; politics and gossip left out), or [] when
    `chatterbot-corpus` is not installed."""
    return [list(turns) for turns in _chatterbot_conversations(min_turns)]


_SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z ,.'?!-]*$")


def is_speakable(line: str, min_words: int = 2, max_words: int = 8, max_chars: int = 60) -> bool:
    """Short plain-English lines suitable for the speech sets (no digits, symbols or ALL CAPS)."""
    words = line.split()
    return (bool(_SPEAKABLE.match(line)) and min_words <= len(words) <= max_words and len(line) <= max_chars
            and not line.isupper() and bool(normalize_transcript(line)))


def conversation_split(conversation: list[str]) -> str:
    return stable_split("conversation:" + normalize_transcript(conversation[0]), (0.9, 0.05, 0.05))


# ---------------------------------------------------------------- sentence pools


class SentencePool:
    """Draws sentences for one split, never the same normalized text twice, and never a text whose
    split (by its template or a `reserved` assignment) is another split.

    Args:
        reserved (`dict[str, str]`): normalized text -> split it must stay in (facts and their questions).
        chatterbot_lines (`list[tuple[str, str]]`): (line, split) from `chatterbot_lines`.
        chatterbot_share (`float`): fraction of draws taken from the ChatterBot lines.
    """

    def __init__(
        self, reserved: dict[str, str], chatterbot_lines: list[tuple[str, str]], chatterbot_share: float = 0.2
    ):
        self.reserved = reserved
        self.chatterbot = {split: [line for line, s in chatterbot_lines if s == split] for split in SPLITS}
        self.chatterbot_share = chatterbot_share if chatterbot_lines else 0.0
        self.used: set[str] = set()

    def draw(
        self, split: str, count: int, rng: np.random.Generator, max_tries_per_sentence: int = 400
    ) -> list[tuple[str, str]]:
        """`count` (sentence, template name) pairs of `split`."""
        drawn = []
        tries = 0
        while len(drawn) < count:
            tries += 1
            if tries > max_tries_per_sentence * (count + 10):
                raise RuntimeError(f"could not draw {count} distinct {split} sentences (got {len(drawn)})")
            if rng.uniform() < self.chatterbot_share and self.chatterbot[split]:
                text, name, target = _pick(rng, self.chatterbot[split]), "chatterbot", split
            else:
                template = _pick(rng, SENTENCE_TEMPLATES)
                raw, combo = template.make(rng)
                text, name = capitalize(raw), template.name
                target = sentence_split(text, template, combo)
            key = normalize_transcript(text)
            target = self.reserved.get(key, target)
            if target != split or key in self.used:
                continue
            self.used.add(key)
            drawn.append((text, name))
        return drawn


def chatterbot_lines(conversations: list[list[str]]) -> list[tuple[str, str]]:
    """Speakable (line, split) pairs; a line seen in conversations of two splits is left out."""
    splits: dict[str, set[str]] = {}
    lines: dict[str, str] = {}
    for conversation in conversations:
        split = conversation_split(conversation)
        for line in conversation:
            if is_speakable(line):
                key = normalize_transcript(line)
                splits.setdefault(key, set()).add(split)
                lines.setdefault(key, line)
    return [(lines[key], next(iter(s))) for key, s in sorted(splits.items()) if len(s) == 1]


# ---------------------------------------------------------------- corpus


_TOKEN = re.compile(r"[a-z0-9']+|[+\-=]")


def content_key(text: str) -> str:
    """Lowercase words, numbers and arithmetic signs, space-separated: the form in which texts are
    compared for held-out content (unlike `normalize_transcript`, it keeps digits)."""
    return " ".join(_TOKEN.findall(text.lower()))


class HeldoutFilter:
    """Tells whether a text contains a held-out sentence: equal to one (after `content_key`) or, for
    held-out sentences of 4+ tokens, containing one as a token sequence."""

    def __init__(self, heldout: list[str]):
        self.exact: set[str] = set()
        self.by_prefix: dict[tuple[str, ...], list[str]] = {}
        for text in heldout:
            key = content_key(text)
            if not key:
                continue
            self.exact.add(key)
            words = key.split()
            if len(words) >= 4:
                self.by_prefix.setdefault(tuple(words[:4]), []).append(f" {key} ")

    def allows(self, text: str) -> bool:
        key = content_key(text)
        if key in self.exact:
            return False
        words, padded = key.split(), f" {key} "
        for i in range(len(words) - 3):
            for candidate in self.by_prefix.get(tuple(words[i : i + 4]), ()):
                if candidate in padded:
                    return False
        return True


def _sequence_document(rng: np.random.Generator) -> str:
    kind = rng.integers(4)
    if kind == 0:
        return "The days of the week are " + ", ".join(d.capitalize() for d in DAYS[:-1]) + " and Sunday."
    if kind == 1:
        return "The months of the year are " + ", ".join(m.capitalize() for m in MONTHS[:-1]) + " and December."
    if kind == 2:
        start = int(rng.integers(0, 12))
        return capitalize(", ".join(number_word(n) for n in range(start, start + int(rng.integers(4, 9))))) + "."
    return "The alphabet is " + " ".join("abcdefghijklmnopqrstuvwxyz") + "."


def corpus_documents(
    rng: np.random.Generator,
    count: int,
    sentences: list[str],
    facts: list,
    qa_facts: list,
    conversations: list[list[str]],
    chats: list[list[dict[str, str]]],
    scene_texts: list[str],
    heldout: HeldoutFilter,
    sequences: bool = True,
) -> list[str]:
    """`count` distinct short documents for language-model pretraining.

    Mixture: runs of 1-4 sentences; statements of any fact (1-4); question + answer of `qa_facts`;
    scene descriptions; ChatterBot dialogs; chat conversations (user and assistant turns as lines);
    day / month / number / alphabet sequences (if `sequences`). Every unit that `heldout` rejects is
    left out, and so is a finished document that it rejects.
    """
    kinds = ["sentences", "facts", "fact_qa", "scene", "dialog", "chat", "sequence"]
    weights = np.array([0.3, 0.15, 0.1, 0.15, 0.1, 0.15, 0.05])
    available = [bool(x) for x in (sentences, facts, qa_facts, scene_texts, conversations, chats, sequences)]
    weights = np.where(available, weights, 0.0)
    documents, seen, tries = [], set(), 0
    while len(documents) < count:
        tries += 1
        if tries > 50 * count + 1000:
            raise RuntimeError(f"could not make {count} distinct corpus documents (made {len(documents)})")
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        if kind == "sentences":
            units = [sentences[i] for i in rng.integers(len(sentences), size=int(rng.integers(1, 5)))]
        elif kind == "facts":
            units = [_pick(rng, facts[i].statements) for i in rng.integers(len(facts), size=int(rng.integers(1, 5)))]
        elif kind == "fact_qa":
            fact = _pick(rng, qa_facts)
            answer = _pick(rng, fact.statements) if rng.uniform() < 0.5 else capitalize(fact.answer) + "."
            units = [capitalize(_pick(rng, fact.questions)), answer]
        elif kind == "scene":
            units = [_pick(rng, scene_texts)]
        elif kind == "dialog":
            units = list(_pick(rng, conversations))
        elif kind == "chat":
            units = [m["content"] for m in _pick(rng, chats)]
        else:
            units = [_sequence_document(rng)]
        units = [u for u in units if heldout.allows(u)]
        separator = "\n" if kind in ("dialog", "chat") else " "
        document = separator.join(units)
        if not document or document in seen or not heldout.allows(document):
            continue
        seen.add(document)
        documents.append(document)
    return documents
