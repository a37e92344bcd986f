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

A model with a real vocabulary knows many more words than the world does, so
content is judged on every word of the response (after a known filler opening
and rambling ending, which ``clean`` judges): a word the task cannot account for
(not a ``FUNCTION`` word, not a word of the prompt, not of the world's lexicon,
plural ``-s``/``-es`` forms included) counts against the criterion it would
dodge. ``The sea is sad and calm.`` has one adjective of two that is kind, not
all; ``In the forest or the woods.`` names a place besides the right one; a
summary may use only the story's words; rewritten words must be the prompt's
words alone. A negated label (``not kind``) counts for nothing, and a number may
be written in digits or in words.
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
# Words that carry no content of their own: articles, pronouns, auxiliaries, prepositions,
# conjunctions and a few intensifiers. Every other word of a response must be the task's.
FUNCTION = frozenset("""a an the is are was were be it its this that these those there here of in
    on at to for with by from as and or but so very too quite really just also my your our their
    his her i you we they he she me us them some""".split())
NEGATIONS = frozenset(("not", "no", "never", "nor", "isn", "aren", "don", "doesn"))
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


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


def _known(word: str, vocabulary) -> str | None:
    """``word``, or its singular (``-s``/``-es`` dropped), if that is in ``vocabulary``."""
    forms = [word] + [word[:-len(end)] for end in ("s", "es") if word.endswith(end)]
    return next((form for form in forms if form in vocabulary), None)


def _unknown(words, *vocabularies) -> list[str]:
    """The ``words`` that are neither ``FUNCTION`` words nor (in a form) of ``vocabularies``."""
    vocabulary = set(FUNCTION).union(*vocabularies)
    return [w for w in words if _known(w, vocabulary) is None]


@dataclasses.dataclass(frozen=True)
class Family:
    """One category: ``make(rng) -> Task``, ``content(task, response) -> [0, 1]``,
    ``flawed(rng, task) -> response`` with wrong content."""

    category: str
    make: Callable[[np.random.Generator], Task]
    content: Callable[[Task, str], float]
    flawed: Callable[[np.random.Generator, Task], str]


def _has_only(keys, pool, words, prompt: str) -> float:
    """1 if every key is present and no other word of ``pool``; partial credit otherwise. Words
    neither of ``pool``, the prompt nor ``FUNCTION`` count as other answers."""
    present = [p for p in (_known(w, pool) for w in words) if p]
    if not present:
        return 0.0
    named = present + _unknown(words, pool, _words(prompt))
    return 0.5 * np.mean([k in present for k in keys]) + 0.5 * np.mean([w in keys for w in named])


# generation: a happy line about a subject, all adjectives kind.
def _make_generation(rng):
    subject = _pick(rng, SUBJECTS)
    a, b = _pick(rng, KIND, 2)
    return Task(f"Write a happy line about {subject}.", "generation",
                f"{subject[0].upper()}{subject[1:]} is {a} and {b}.", (subject.split()[-1],))


def _content_generation(task, response):
    """0.4 for naming the subject, 0.6 × the share of kind words among the describing words (every
    word but ``FUNCTION`` words and the subject: unknown words are not kind)."""
    words = _words(response)
    describing = _unknown(words, task.keys)
    kind = np.mean([w in KIND for w in describing]) if describing else 0.0
    return 0.4 * any(_known(w, task.keys) for w in words) + 0.6 * kind


def _flawed_generation(rng, task):
    a, b = _pick(rng, KIND), _pick(rng, UNKIND)
    return task.answer.rsplit(" is ", 1)[0] + f" is {a} and {b}."


# open QA: where an animal lives (a fact of the pretraining corpus).
def _make_open_qa(rng):
    animal = _pick(rng, tuple(HOMES))
    return Task(f"Where does {article(animal)} live?", "open_qa", f"In the {HOMES[animal]}.",
                (HOMES[animal],))


def _content_one_of(pool):
    return lambda task, response: _has_only(task.keys, pool, _words(response), task.prompt)


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
    """How near the number of distinct right things is to n, times their share of the things
    named (other kinds' things, and unknown words, count as wrong ones)."""
    kind, n = task.keys[0], int(task.keys[1])
    words = _words(response)
    valid = set(_known(w, THINGS[kind]) for w in words) - {None}
    if not valid:
        return 0.0
    lexicon = sum(THINGS.values(), ())
    others = sum(_known(w, lexicon) not in (None, *THINGS[kind]) for w in words)
    others += len(_unknown(words, lexicon, _words(task.prompt), NUMBERS))
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
    """The share of the words found, halved unless every word is in capitals, times the share of
    the response's words that are the prompt's words."""
    found = WORD.findall(response)
    if not found:
        return 0.0
    return float(np.mean([k in found for k in task.keys])) * (
        1.0 if all(w.isupper() for w in found) else 0.5) * np.mean([w in task.keys for w in found])


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
    """The share of the keys present, halved unless exactly one animal is named, times the share
    of the response's words (``FUNCTION`` words aside) that are the story's."""
    words = _words(response)
    meaningful = [w for w in words if w not in FUNCTION]
    if not meaningful:
        return 0.0
    story = 1 - len(_unknown(meaningful, _words(task.prompt))) / len(meaningful)
    return float(np.mean([k in words for k in task.keys])) * (
        1.0 if sum(w in THINGS["animals"] for w in words) == 1 else 0.5) * story


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
    """1 if the one label given is right and not negated (``not kind``, ``isn't unkind``)."""
    words = _words(response)
    labels = [i for i, w in enumerate(words) if w in ("kind", "unkind")]
    negated = any(NEGATIONS.intersection(words[max(0, i - 2):i]) for i in labels)
    return float([words[i] for i in labels] == [task.keys[0]] and not negated)


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
    """1 if the response gives one number, the right one, in digits or in words."""
    numbers = re.findall(r"\d+", response) + [str(NUMBERS.index(w)) for w in _words(response)
                                               if w in NUMBERS]
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


def _without_filler(text: str) -> str:
    """``text`` less a known filler opening and rambling ending (``clean`` judges those)."""
    for filler in FILLERS:
        if text.startswith(filler):
            text = text[len(filler):]
    for ramble in RAMBLES:
        if text.endswith(ramble):
            text = text[:-len(ramble)]
    return text


def rubric(task: Task, response: str) -> dict[str, float]:
    """The shared hidden rubric: ``content``, ``clean``, ``concise`` and their weighted
    ``quality`` in [0, 1]."""
    text = response.strip()
    content = FAMILIES[task.category].content(task, _without_filler(text))
    clean = float(bool(text) and text[-1] in ".!" and not text.startswith(FILLERS)
                  and not text.endswith(RAMBLES))
    limit = 2 * len(task.answer) + 10
    concise = float(np.clip(2 - len(text) / limit, 0, 1))
    return dict(content=content, clean=clean, concise=concise,
                quality=0.6 * content + 0.2 * clean + 0.2 * concise)
