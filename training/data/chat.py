"""Instruction / chat conversations for the built-in `chat` dataset.

Tasks (single-turn unless noted), each with a split fixed by its content key so that train,
validation and test never share a task instance:
    chatterbot   multi-turn ChatterBot dialogs (split by the first line)
    fact         "What colour is the sky?" -> "The sky is blue." / "Blue." (split by fact, see `facts.py`)
    arithmetic   "What is 3 + 4?" -> "3 + 4 = 7." (the digit form of the plus/minus facts, same split)
    letters      spelling, first letter, number of letters, capitals (split by the word)
    repeat       "Repeat after me: <sentence>" -> "<sentence>" (split by the sentence)
    numbers      counting ranges and comparisons (split by the numbers)
    greeting     greetings, thanks, goodbyes, "who are you" (split by the user's wording)
Messages are `[{"role": "user" | "assistant", "content": str}, ...]`, starting with the user and
ending with the assistant.
"""

import numpy as np

from .facts import Fact, fact_split, number_word
from .scenes import COLOURS, SHAPES
from .speech import normalize_transcript
from .splits import stable_split
from .text import ANIMALS, FEELINGS, FOODS, THINGS, content_key, conversation_split

ASSISTANT_NAME = "MuOmni"
_GREETINGS = (
    (("Hello!", "Hi!", "Hello there.", "Hi there!", "Hey!", "Good morning!", "Good afternoon!", "Good evening!",
      "Hey there, assistant.", "Hello, how are you?"),
     ("Hello! How can I help you today?", "Hi! What can I do for you?", "Hello! It is nice to hear from you.")),
    (("How are you?", "How are you doing?", "How is it going?", "Are you well?", "How do you feel today?"),
     ("I am doing well, thank you. How can I help?", "I am fine, thanks for asking!")),
    (("Thank you!", "Thanks a lot.", "Thank you very much.", "Thanks!", "Cheers, thank you."),
     ("You are welcome!", "Happy to help.", "Any time!")),
    (("Goodbye!", "Bye!", "See you later.", "Good night!", "I have to go now.", "Bye bye."),
     ("Goodbye! Have a nice day.", "Bye! Take care.", "See you soon!")),
    (("What is your name?", "Who are you?", "What are you?", "Tell me about yourself.", "What should I call you?"),
     (f"I am {ASSISTANT_NAME}, a small assistant that can read, look at pictures, listen and speak.",
      f"My name is {ASSISTANT_NAME}. I am a tiny assistant.")),
    (("What can you do?", "How can you help me?", "What are you able to do?", "What are you good at?"),
     ("I can answer simple questions, describe pictures, write down what I hear and read text aloud.",)),
)
_WORDS = tuple(sorted({*THINGS, *ANIMALS, *(f for f in FOODS if " " not in f), *COLOURS, *SHAPES, *FEELINGS}))
_REPEAT = ("Repeat after me: {s}", "Say this back to me: {s}", "Please repeat: {s}", "Can you repeat this? {s}")
TASK_WEIGHTS = {"chatterbot": 0.3, "fact": 0.22, "arithmetic": 0.08, "letters": 0.12, "repeat": 0.1,
                "numbers": 0.08, "greeting": 0.1}


def _pick(rng: np.random.Generator, items):
    return items[rng.integers(len(items))]


def _turns(*contents: str) -> list[dict[str, str]]:
    return [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(contents)]


def fact_chat(fact: Fact, rng: np.random.Generator) -> list[dict[str, str]]:
    question = _pick(rng, fact.questions)
    answer = _pick(rng, fact.statements[:1]) if rng.uniform() < 0.5 else fact.answer[0].upper() + fact.answer[1:] + "."
    return _turns(question[0].upper() + question[1:], answer)


def _letters(rng):
    word = _pick(rng, _WORDS)
    kind = rng.integers(4)
    if kind == 0:
        user, answer = _pick(rng, (f"How do you spell {word}?", f"Spell the word {word}.")), "-".join(word)
    elif kind == 1:
        user, answer = f"What is the first letter of {word}?", f"The first letter of {word} is {word[0]}."
    elif kind == 2:
        user = f"How many letters are in the word {word}?"
        answer = f"The word {word} has {number_word(len(word))} letters."
    else:
        user, answer = f"Write {word} in capital letters.", word.upper()
    return f"word:{word}", _turns(user, answer)


def _numbers(rng):
    if rng.uniform() < 0.5:
        start = int(rng.integers(1, 16))
        stop = start + int(rng.integers(2, 7))
        counted = ", ".join(map(str, range(start, stop + 1))) + "."
        return f"count:{start}-{stop}", _turns(f"Count from {start} to {stop}.", counted)
    a, b = (int(x) for x in rng.choice(np.arange(1, 21), 2, replace=False))
    bigger = rng.uniform() < 0.5
    word = "bigger" if bigger else "smaller"
    answer = f"{max(a, b) if bigger else min(a, b)}."
    return f"compare:{min(a, b)}-{max(a, b)}-{word}", _turns(f"Which number is {word}, {a} or {b}?", answer)


def _arithmetic(fact: Fact, rng):
    kind, expression = fact.key.split(":")
    a, b = (int(x) for x in expression.replace("-", "+").split("+"))
    symbol, value = ("+", a + b) if kind == "plus" else ("-", a - b)
    user = _pick(rng, (f"What is {a} {symbol} {b}?", f"Calculate {a} {symbol} {b}.", f"{a} {symbol} {b} = ?"))
    return _turns(user, f"{a} {symbol} {b} = {value}.")


class ChatSampler:
    """Draws distinct conversations of one split from the task mixture `TASK_WEIGHTS`.

    Args:
        facts (`list[Fact]`): the knowledge base (split by `fact_split`).
        conversations (`list[list[str]]`): ChatterBot dialogs (split by `conversation_split`).
        sentences (`dict[str, list[str]]`): split -> sentences to repeat (from that split's pool).
    """

    def __init__(self, facts: list[Fact], conversations: list[list[str]], sentences: dict[str, list[str]]):
        self.facts = {s: [f for f in facts if fact_split(f) == s] for s in ("train", "validation", "test")}
        self.arithmetic = {s: [f for f in fs if f.key.startswith(("plus:", "minus:"))] for s, fs in self.facts.items()}
        self.conversations = {s: [c for c in conversations if conversation_split(c) == s] for s in self.facts}
        self.sentences = sentences
        self.seen: set[tuple[str, ...]] = set()
        # first user message -> split, so that no opening line is shared by two splits across tasks
        # (a greeting "How are you doing?" and a ChatterBot dialog that starts with it)
        self.openings: dict[str, str] = {}
        for fact in facts:
            for question in fact.questions:
                self.openings.setdefault(content_key(question), fact_split(fact))
        for conversation in conversations:
            self.openings.setdefault(content_key(conversation[0]), conversation_split(conversation))

    def _candidate(self, task: str, split: str, rng) -> list[dict[str, str]] | None:
        """A conversation of `task` in `split`, or None when the task has nothing in that split."""
        if task == "chatterbot":
            pool = self.conversations[split]
            if not pool:
                return None
            turns = _pick(rng, pool)
            return _turns(*turns[: len(turns) // 2 * 2])  # end on the assistant
        if task in ("fact", "arithmetic"):
            pool = self.facts[split] if task == "fact" else self.arithmetic[split]
            if not pool:
                return None
            fact = _pick(rng, pool)
            return fact_chat(fact, rng) if task == "fact" else _arithmetic(fact, rng)
        if task == "repeat":
            pool = self.sentences.get(split, [])
            if not pool:
                return None
            sentence = _pick(rng, pool)
            return _turns(_pick(rng, _REPEAT).format(s=sentence), sentence)
        for _ in range(50):  # keyed tasks: draw until the key falls in `split`
            if task == "letters":
                key, messages = _letters(rng)
            elif task == "numbers":
                key, messages = _numbers(rng)
            else:
                users, replies = _pick(rng, _GREETINGS)
                user = _pick(rng, users)
                key, messages = f"greeting:{normalize_transcript(user)}", _turns(user, _pick(rng, replies))
            if stable_split(key) == split:
                return messages
        return None

    def draw(self, split: str, count: int, rng: np.random.Generator) -> list[list[dict[str, str]]]:
        tasks, weights = list(TASK_WEIGHTS), np.array(list(TASK_WEIGHTS.values()))
        exhausted: set[str] = set()
        drawn, failures = [], {task: 0 for task in tasks}
        while len(drawn) < count:
            live = [i for i, t in enumerate(tasks) if t not in exhausted]
            if not live:
                raise RuntimeError(
                    f"the chat tasks cannot make {count} distinct {split} conversations (made {len(drawn)})"
                )
            task = tasks[live[rng.choice(len(live), p=weights[live] / weights[live].sum())]]
            messages = self._candidate(task, split, rng)
            signature = tuple(m["content"] for m in messages) if messages else None
            opening = content_key(messages[0]["content"]) if messages else None
            if signature is None or signature in self.seen or self.openings.setdefault(opening, split) != split:
                failures[task] += 1
                if failures[task] > 200:
                    exhausted.add(task)
                continue
            failures[task] = 0
            self.seen.add(signature)
            drawn.append(messages)
        return drawn
