"""A synthetic labeller: answers image pairs from a hidden taste the way a person would, noise and ties included.

With a known taste, a reward model's held-out accuracy can be compared with the best any model could reach on
these labels (``noise_ceiling``), which real human labels never allow. It is a pure function from pairs to
choices ('left' / 'right' / 'tie'); writing the choices to the label store is the caller's business.

The choice model: a pair whose taste scores differ by less than ``tie_margin`` is a tie (too close to call);
otherwise a tie with probability ``tie_rate``, else Bradley-Terry: P(left) = sigmoid((s_left - s_right) / T).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from rlhf.toy.tastes import get_taste


@dataclass(frozen=True)
class Persona:
    """A labeller: a hidden taste plus how noisily and how often undecidedly it answers."""

    name: str
    taste: str = "large_warm"
    """A name from ``rlhf.toy.tastes.TASTES``."""
    temperature: float = 0.05
    """Bradley-Terry temperature in taste-score units (tastes score about 0 to 1); 0: always the favourite."""
    tie_margin: float = 0.0
    """Score differences below this are always ties."""
    tie_rate: float = 0.0
    """Probability of a tie for any other pair."""


# Decisive-label noise ceilings on random pairs of toy drawings judged by large_warm (half the score
# differences are below 0.2): oracle 0.99 (exactly equal scores are coin flips), careful 0.97, typical 0.93,
# hasty 0.78 (single humans on cross-model pairs: about 0.78), fence_sitter 0.96 with 31% ties.
PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in [
        Persona("oracle", temperature=0.0),
        Persona("careful", temperature=0.02, tie_margin=0.01),
        Persona("typical", temperature=0.05, tie_margin=0.02, tie_rate=0.05),
        Persona("hasty", temperature=0.15, tie_rate=0.05),
        Persona("fence_sitter", temperature=0.05, tie_margin=0.05, tie_rate=0.2),
    ]
}


def get_persona(name: str, taste: str | None = None) -> Persona:
    """A preset persona, optionally with another taste (``get_persona('typical', 'centred')``)."""
    if name not in PERSONAS:
        raise ValueError(f"unknown persona {name!r}; choose one of: {', '.join(PERSONAS)}")
    if taste is not None:
        get_taste(taste)  # fail now, with the list of tastes, rather than at the first label
    return PERSONAS[name] if taste is None else replace(PERSONAS[name], taste=taste)


def choice_probabilities(persona: Persona, score_left: np.ndarray, score_right: np.ndarray) -> np.ndarray:
    """(N, 3) probabilities of 'left', 'right', 'tie' given the taste's scores of each side."""
    d = np.asarray(score_left, np.float64) - np.asarray(score_right, np.float64)
    p_tie = np.where(np.abs(d) < persona.tie_margin, 1.0, persona.tie_rate)
    if persona.temperature > 0:
        p_left = 1 / (1 + np.exp(-np.clip(d / persona.temperature, -50, 50)))
    else:
        p_left = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    return np.stack([(1 - p_tie) * p_left, (1 - p_tie) * (1 - p_left), p_tie], axis=1)


def taste_scores(persona: Persona, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
    return get_taste(persona.taste).score(list(images), list(prompts))


def choose(persona: Persona, score_left: np.ndarray, score_right: np.ndarray,
           seed: int | np.random.Generator = 0) -> list[str]:
    """Sample one choice per pair from ``choice_probabilities``, reproducibly by seed."""
    probs = choice_probabilities(persona, score_left, score_right)
    u = np.random.default_rng(seed).random(len(probs))
    picks = (u[:, None] > np.cumsum(probs, axis=1)).sum(1).clip(0, 2)
    return [("left", "right", "tie")[i] for i in picks]


def label_pairs(persona: Persona, left: Sequence[np.ndarray], right: Sequence[np.ndarray], prompts: Sequence[str],
                seed: int | np.random.Generator = 0) -> list[str]:
    """The persona's choice for each (left image, right image, prompt), reproducible by seed."""
    return choose(persona, taste_scores(persona, left, prompts), taste_scores(persona, right, prompts), seed)


def noise_ceiling(persona: Persona, score_left: np.ndarray, score_right: np.ndarray) -> dict[str, float]:
    """Expected accuracy of the persona's own noiseless taste on its noisy labels, exactly (no simulation).

    Same definitions as ``evaluate.pair_metrics``: ``accuracy`` over decisive labels (expected correct over
    expected decisive count), ``accuracy_with_ties`` with every tie earning half credit. No model of these
    labels can beat it in expectation.
    """
    p_left, p_right, p_tie = choice_probabilities(persona, score_left, score_right).T
    d = np.asarray(score_left, np.float64) - np.asarray(score_right, np.float64)
    favours_left = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    correct = favours_left * p_left + (1 - favours_left) * p_right
    return {"accuracy": float(correct.sum() / (p_left + p_right).sum()),
            "accuracy_with_ties": float((correct + 0.5 * p_tie).mean()),
            "tie_rate": float(p_tie.mean())}
