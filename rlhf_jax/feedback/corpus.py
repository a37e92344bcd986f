"""The simulated internet: pretraining text in which instructions are rarely followed.

Three kinds of documents, mixed ``FACT : STORY : FORUM = 3 : 3 : 4``:

- facts (``The color of snow is white.``, ``The cow says moo.``, ``A fox lives
  in the forest.``): knowledge the base model must learn, and the held-out
  ``fact_questions`` of the alignment tax;
- stories (``On Monday Ana saw a fox; it was calm and grim.``);
- forum pages of one to three threads ``Q: <a prompt of the world>\\nA: <reply>``;
  only on a helpful page (probability ``FOLLOWED``, 0.1) do the replies answer
  the requests, elsewhere they dodge them, as people on the internet do.

A base model trained on it continues ``Q: …\\nA:`` like a forum, mostly without
following the instruction; a few-shot prefix of answered threads
(``fewshot_prefix``) makes the page look helpful, so it follows more often, as
GPT-3 does when prompted.
"""

from __future__ import annotations

import numpy as np

from rlhf_jax.feedback.tasks import HOMES, KIND, NAMES, THINGS, UNKIND, Task, article

FACT_COLORS = dict(snow="white", coal="black", grass="green", sky="blue", blood="red",
                   milk="white", night="black", leaf="green", sea="blue", rose="red",
                   sun="yellow", lemon="yellow")
SOUNDS = dict(cow="moo", dog="woof", cat="meow", owl="hoot", bee="buzz", duck="quack",
              sheep="baa", lion="roar", pig="oink", frog="croak")
DAYS = ("Monday", "Tuesday", "Friday", "Sunday")
DODGES = ("Why do you ask?", "I do not know.", "Ask someone else.", "Good question.",
          "No idea, sorry.", "Same here.", "Who knows?", "Not today.")
FOLLOWED = 0.1


def fact(rng: np.random.Generator) -> str:
    relation = rng.integers(3)
    if relation == 0:
        thing = list(FACT_COLORS)[rng.integers(len(FACT_COLORS))]
        return f"The color of {thing} is {FACT_COLORS[thing]}."
    if relation == 1:
        animal = list(SOUNDS)[rng.integers(len(SOUNDS))]
        return f"The {animal} says {SOUNDS[animal]}."
    animal = list(HOMES)[rng.integers(len(HOMES))]
    return f"A {animal} lives in the {HOMES[animal]}."


def story(rng: np.random.Generator) -> str:
    name, day = NAMES[rng.integers(len(NAMES))], DAYS[rng.integers(len(DAYS))]
    animal = THINGS["animals"][rng.integers(len(THINGS["animals"]))]
    a, b = rng.choice(KIND + UNKIND, 2, replace=False)
    return f"On {day} {name} saw {article(animal)}; it was {a} and {b}."


def thread(tasks: list[Task], rng: np.random.Generator) -> str:
    """A forum page of requests: on a helpful page (probability ``FOLLOWED``) every reply
    answers, on the others every reply dodges."""
    helpful = rng.random() < FOLLOWED
    replies = [t.answer if helpful else DODGES[rng.integers(len(DODGES))] for t in tasks]
    return "\n\n".join(f"Q: {t.prompt}\nA: {r}" for t, r in zip(tasks, replies))


def document(rng: np.random.Generator, tasks: list[Task]) -> str:
    """One pretraining text; a forum page uses 1 to 3 of ``tasks``."""
    draw = rng.random()
    if draw < 0.3:
        return " ".join(fact(rng) for _ in range(int(rng.integers(1, 4))))
    if draw < 0.6:
        return story(rng)
    return thread(tasks[:int(rng.integers(1, 4))], rng)


def internet_prompt(prompt: str) -> str:
    """How a request appears in the corpus: what a base model is prompted with."""
    return f"Q: {prompt}\nA:"


def fewshot_prefix(tasks: list[Task]) -> str:
    """Answered threads to put before ``internet_prompt`` (the paper's prompted GPT-3)."""
    return "".join(f"Q: {t.prompt}\nA: {t.answer}\n\n" for t in tasks)


def fact_questions() -> list[tuple[str, tuple[str, ...], int]]:
    """The held-out task family of the alignment tax: ``(context, choices, correct index)`` for
    every color and sound fact, answered by comparing the log-likelihoods of the choices."""
    colors = tuple(sorted(set(FACT_COLORS.values())))
    sounds = tuple(sorted(SOUNDS.values()))
    questions = [(f"The color of {t} is", tuple(f" {c}." for c in colors), colors.index(c))
                 for t, c in FACT_COLORS.items()]
    questions += [(f"The {a} says", tuple(f" {s}." for s in sounds), sounds.index(s))
                   for a, s in SOUNDS.items()]
    return questions
