"""Task families of the simulated world: prompts whose answers a program can judge.

Each family is one of the paper's use-case categories. ``make(rng)`` draws a
``Task``: the prompt, its category and the one correct answer. ``content(task,
response)`` in [0, 1] measures how much of the requested content a response
has (partial credit), and ``flawed(rng, task)`` writes a plausible wrong answer
(the mistakes demonstrators make and models imitate). The hidden rubric that
every labeler shares (``rubric``) adds format and concision to content:

    quality = 0.6·content + 0.2·clean + 0.2·concise

clean: no filler opening or rambling ending, and a final ``.`` or ``!``;
concise: 1 up to ``2·len(answer) + 10`` characters, then falling linearly to 0
over as many again. The words are few and short, so a byte-level model of a
few hundred thousand parameters can learn the tasks in minutes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

KIND = ("kind", "bright", "warm", "calm", "gentle", "happy")
UNKIND = ("rude", "dull", "cold", "harsh", "lazy", "grim")
THINGS = dict(fruits=("apple", "pear", "plum", "fig", "lime", "kiwi"),
              animals=("cat", "dog", "fox", "owl", "bee", "cow"),
              colors=("red", "blue", "green", "pink", "gray", "gold"))
HOMES = dict(fox="forest", fish="sea", cow="farm", bee="hive", owl="tree", bat="cave",
             ant="hill", frog="pond")
NAMES = ("Ana", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo")
TOWNS = ("Oslo", "Rome", "Lima", "Kyiv", "Baku", "Riga", "Bern", "Doha")
SUBJECTS = ("the sea", "a cat", "the rain", "my tea", "the moon", "a song", "the town")
NUMBER_WORDS = ("two", "three", "four")
FILLERS = ("Well, I think ", "Hmm, maybe ", "So, um, ")
RAMBLES = (" And so on.", " That is all I know.", " Or not.")
WORD = re.compile(r"[A-Za-z]+")


@dataclasses.dataclass(frozen=True)
class Task:
    prompt: str
    category: str
    answer: str  # the one correct, clean answer
    keys: tuple[str, ...] = ()  # the content a correct answer holds (family-specific)


def _pick(rng, items, n=None):
    if n is None:
        return items[int(rng.integers(len(items)))]
    return [items[int(i)] for i in rng.choice(len(items), n, replace=False)]


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


@dataclasses.dataclass(frozen=True)
class Family:
    """One category: ``make(rng) -> Task``, ``content(task, response) -> [0, 1]``,
    ``flawed(rng, task) -> response`` with wrong content."""

    category: str
    make: Callable[[np.random.Generator], Task]
    content: Callable[[Task, str], float]
    flawed: Callable[[np.random.Generator, Task], str]


def _has_only(keys, pool, words) -> float:
    """1 if every key is present and no other word of ``pool``; partial credit otherwise."""
    present = [w for w in words if w in pool]
    if not present:
        return 0.0
    return 0.5 * np.mean([k in present for k in keys]) + 0.5 * np.mean([w in keys for w in present])


# generation: a happy line about a subject, all adjectives kind.
def _make_generation(rng):
    subject = _pick(rng, SUBJECTS)
    a, b = _pick(rng, KIND, 2)
    return Task(f"Write a happy line about {subject}.", "generation",
                f"{subject[0].upper()}{subject[1:]} is {a} and {b}.", (subject.split()[-1],))


def _content_generation(task, response):
    words = _words(response)
    adjectives = [w for w in words if w in KIND + UNKIND]
    kind = np.mean([w in KIND for w in adjectives]) if adjectives else 0.0
    return 0.4 * (task.keys[0] in words) + 0.6 * kind


def _flawed_generation(rng, task):
    a, b = _pick(rng, KIND), _pick(rng, UNKIND)
    return task.answer.rsplit(" is ", 1)[0] + f" is {a} and {b}."


# open QA: where an animal lives (a fact of the pretraining corpus).
def _make_open_qa(rng):
    animal = _pick(rng, tuple(HOMES))
    return Task(f"Where does {article(animal)} live?", "open_qa", f"In the {HOMES[animal]}.",
                (HOMES[animal],))


def _content_one_of(pool):
    return lambda task, response: _has_only(task.keys, pool, _words(response))


def _flawed_open_qa(rng, task):
    return f"In the {_pick(rng, [h for h in HOMES.values() if h != task.keys[0]])}."


# brainstorming: name n things of a kind.
def _make_brainstorming(rng):
    kind = _pick(rng, tuple(THINGS))
    n = int(rng.integers(2, 5))
    items = _pick(rng, THINGS[kind], n)
    return Task(f"Name {NUMBER_WORDS[n - 2]} {kind}.", "brainstorming",
                ", ".join(items).capitalize() + ".", (kind, str(n)))


def _content_brainstorming(task, response):
    kind, n = task.keys[0], int(task.keys[1])
    words = _words(response)
    valid = set(w for w in words if w in THINGS[kind])
    if not valid:
        return 0.0
    others = sum(w in sum(THINGS.values(), ()) and w not in THINGS[kind] for w in words)
    return max(0.0, 1 - abs(len(valid) - n) / n) * len(valid) / (len(valid) + others)


def _flawed_brainstorming(rng, task):
    kind, n = task.keys[0], int(task.keys[1])
    m = n + 1 if n < 4 and rng.random() < 0.5 else n - 1
    return ", ".join(_pick(rng, THINGS[kind], m)).capitalize() + "."


# chat: greet the user by name.
def _make_chat(rng):
    name = _pick(rng, NAMES)
    return Task(f"Hi, I am {name}. Greet me!", "chat", f"Hello {name}, nice to meet you!",
                (name.lower(),))


def _content_chat(task, response):
    words = _words(response)
    names = [w for w in words if w in (n.lower() for n in NAMES)]
    return 0.4 * ("hello" in words or "hi" in words) + 0.6 * (names == [task.keys[0]])


def _flawed_chat(rng, task):
    other = _pick(rng, [n for n in NAMES if n.lower() != task.keys[0]])
    return f"Hello {other}, nice to meet you!"


# rewrite: the words in capitals.
def _make_rewrite(rng):
    words = [_pick(rng, THINGS[_pick(rng, tuple(THINGS))]) for _ in range(3)]
    return Task(f"Say in capitals: {' '.join(words)}", "rewrite", " ".join(words).upper() + ".",
                tuple(w.upper() for w in words))


def _content_rewrite(task, response):
    found = WORD.findall(response)
    return float(np.mean([k in found for k in task.keys])) * (
        1.0 if all(w.isupper() for w in found) else 0.5)


def _flawed_rewrite(rng, task):
    words = list(task.keys)
    words[int(rng.integers(3))] = words[int(rng.integers(3))].lower()
    return " ".join(words) + "."


# summarization: who has which pet, from a two-sentence story.
def _make_summarization(rng):
    name, animal, color = _pick(rng, NAMES), _pick(rng, THINGS["animals"]), _pick(rng, THINGS["colors"])
    return Task(f"Summarize: {name} has {article(animal)}. It is {color} and old.", "summarization",
                f"{name} has a {color} {animal}.", (name.lower(), animal, color))


def _content_summarization(task, response):
    words = _words(response)
    return float(np.mean([k in words for k in task.keys])) * (
        1.0 if sum(w in THINGS["animals"] for w in words) == 1 else 0.5)


def _flawed_summarization(rng, task):
    name, animal, _ = task.keys
    wrong = _pick(rng, [a for a in THINGS["animals"] if a != animal])
    return f"{name.capitalize()} has {article(wrong)}."


# classification: is a word kind or unkind?
def _make_classification(rng):
    word = _pick(rng, KIND + UNKIND)
    label = "kind" if word in KIND else "unkind"
    return Task(f"Is '{word}' kind or unkind?", "classification", f"It is {label}.", (label,))


def _content_classification(task, response):
    words = _words(response)
    labels = [w for w in words if w in ("kind", "unkind")]
    return float(labels == [task.keys[0]])


def _flawed_classification(rng, task):
    return f"It is {'unkind' if task.keys[0] == 'kind' else 'kind'}."


# closed QA: a fact given in the prompt.
def _make_closed_qa(rng):
    name, town = _pick(rng, NAMES), _pick(rng, TOWNS)
    return Task(f"{name} lives in {town}. Where does {name} live?", "closed_qa", f"In {town}.",
                (town.lower(),))


def _flawed_closed_qa(rng, task):
    return f"In {_pick(rng, [t for t in TOWNS if t.lower() != task.keys[0]])}."


# extraction: the number in a sentence.
def _make_extraction(rng):
    name, animal, n = _pick(rng, NAMES), _pick(rng, THINGS["animals"]), int(rng.integers(2, 10))
    return Task(f"How many? {name} saw {n} {animal}s.", "extraction", f"{n}.", (str(n),))


def _content_extraction(task, response):
    numbers = re.findall(r"\d+", response)
    return float(numbers == [task.keys[0]])


def _flawed_extraction(rng, task):
    n = int(task.keys[0])
    return f"{n + 1 if rng.random() < 0.5 else n - 1}."


FAMILIES = {f.category: f for f in (
    Family("generation", _make_generation, _content_generation, _flawed_generation),
    Family("open_qa", _make_open_qa, _content_one_of(tuple(HOMES.values())), _flawed_open_qa),
    Family("brainstorming", _make_brainstorming, _content_brainstorming, _flawed_brainstorming),
    Family("chat", _make_chat, _content_chat, _flawed_chat),
    Family("rewrite", _make_rewrite, _content_rewrite, _flawed_rewrite),
    Family("summarization", _make_summarization, _content_summarization, _flawed_summarization),
    Family("classification", _make_classification, _content_classification,
           _flawed_classification),
    Family("closed_qa", _make_closed_qa, _content_one_of(tuple(t.lower() for t in TOWNS)),
           _flawed_closed_qa),
    Family("extraction", _make_extraction, _content_extraction, _flawed_extraction),
)}
CATEGORIES = tuple(FAMILIES)


def rubric(task: Task, response: str) -> dict[str, float]:
    """The shared hidden rubric: ``content``, ``clean``, ``concise`` and their weighted
    ``quality`` in [0, 1]."""
    text = response.strip()
    content = FAMILIES[task.category].content(task, text)
    clean = float(bool(text) and text[-1] in ".!" and not text.startswith(FILLERS)
                  and not text.endswith(RAMBLES))
    limit = 2 * len(task.answer) + 10
    concise = float(np.clip(2 - len(text) / limit, 0, 1))
    return dict(content=content, clean=clean, concise=concise,
                quality=0.6 * content + 0.2 * clean + 0.2 * concise)
