"""Simulated labelers: a shared hidden rubric, each with its own noise and tastes.

A labeler's judgement of response y to task x is

    s(x, y) = quality(x, y) + length_taste·min(|y|, 60)/60 + exclaim_taste·[y has '!']
              + noise·ε,   ε ~ N(0, 1) drawn anew for every judgement

(``quality`` from ``tasks.rubric``). It ranks K responses by s, best first.
Training labelers also write demonstrations: the task's correct answer, except
that with their own probabilities they open with a filler phrase, ramble at the
end, or get the content wrong, so demonstrations are good but imperfect and a
policy can beat them. Held-out labelers never write or rank training data; they
only evaluate. ``PANEL`` is calibrated so that two labelers agree on about three
quarters of the pairs of K sampled answers (the paper: 72.6% among training
labelers, 77.3% among held-out ones).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np

from rlhf_jax.feedback.tasks import FAMILIES, FILLERS, RAMBLES, Task, rubric


@dataclasses.dataclass(frozen=True)
class Labeler:
    name: str
    training: bool  # writes demonstrations and ranks comparisons; False: evaluates only
    noise: float
    length_taste: float = 0.0
    exclaim_taste: float = 0.0
    filler: float = 0.0  # demonstration habits: probability of a filler opening,
    ramble: float = 0.0  # of a rambling ending,
    mistake: float = 0.0  # and of wrong content

    def expected_score(self, task: Task, response: str) -> float:
        """s(x, y) without the noise term."""
        text = response.strip()
        return (rubric(task, text)["quality"] + self.length_taste * min(len(text), 60) / 60
                + self.exclaim_taste * ("!" in text))

    def scores(self, task: Task, responses: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        expected = np.array([self.expected_score(task, r) for r in responses])
        return expected + self.noise * rng.standard_normal(len(responses))

    def rank(self, task: Task, responses: Sequence[str], rng: np.random.Generator) -> list[int]:
        """Indices of ``responses``, best first."""
        return [int(i) for i in np.argsort(-self.scores(task, responses, rng), kind="stable")]

    def prefers(self, task: Task, a: str, b: str, rng: np.random.Generator) -> float:
        """1 if this labeler prefers ``a`` to ``b``, 0 if ``b``, 0.5 on an exact tie."""
        sa, sb = self.scores(task, [a, b], rng)
        return float(sa > sb) + 0.5 * float(sa == sb)

    def win_probability(self, task: Task, a: str, b: str) -> float:
        """P(this labeler prefers ``a`` to ``b``) = Φ((s̄(a) − s̄(b)) / (noise·√2)), s̄ without
        noise (the two noise draws differ by N(0, 2·noise²))."""
        gap = self.expected_score(task, a) - self.expected_score(task, b)
        if self.noise == 0:
            return float(gap > 0) + 0.5 * float(gap == 0)
        return 0.5 * (1 + math.erf(gap / (2 * self.noise)))

    def demonstrate(self, task: Task, rng: np.random.Generator) -> str:
        if not self.training:
            raise ValueError(f"labeler {self.name} is held out: it writes no demonstrations")
        draws = rng.random(3)
        text = FAMILIES[task.category].flawed(rng, task) if draws[2] < self.mistake else task.answer
        if draws[0] < self.filler:
            text = FILLERS[int(rng.integers(len(FILLERS)))] + text[0].lower() + text[1:]
        if draws[1] < self.ramble:
            text += RAMBLES[int(rng.integers(len(RAMBLES)))]
        return text


PANEL = (
    Labeler("t0", True, noise=0.08, length_taste=0.10, filler=0.30, ramble=0.20, mistake=0.20),
    Labeler("t1", True, noise=0.10, length_taste=0.05, exclaim_taste=0.05, filler=0.35,
            ramble=0.25, mistake=0.25),
    Labeler("t2", True, noise=0.12, exclaim_taste=0.10, filler=0.25, ramble=0.30, mistake=0.20),
    Labeler("t3", True, noise=0.14, length_taste=0.08, filler=0.30, ramble=0.20, mistake=0.30),
    Labeler("h0", False, noise=0.07),
    Labeler("h1", False, noise=0.09, length_taste=-0.05),
    Labeler("h2", False, noise=0.11, exclaim_taste=-0.05),
)


def training_labelers(panel: Sequence[Labeler] = PANEL) -> list[Labeler]:
    return [l for l in panel if l.training]


def heldout_labelers(panel: Sequence[Labeler] = PANEL) -> list[Labeler]:
    return [l for l in panel if not l.training]


def pairwise_agreement(labelers: Sequence[Labeler], tasks: Sequence[Task],
                       responses: Sequence[Sequence[str]], rng: np.random.Generator) -> float:
    """The share of (pair of labelers, pair of responses) cases in which both prefer the same
    response; each labeler judges each prompt's responses once, as when ranking them."""
    agree, total = 0, 0
    for task, group in zip(tasks, responses):
        scores = [l.scores(task, group, rng) for l in labelers]
        for a, b in itertools.combinations(range(len(labelers)), 2):
            for i, j in itertools.combinations(range(len(group)), 2):
                agree += (scores[a][i] > scores[a][j]) == (scores[b][i] > scores[b][j])
                total += 1
    return agree / max(total, 1)
