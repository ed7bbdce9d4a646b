"""Judging a policy on fixed prompts and fixed seeds, so rounds are compared on identical starting noise.

Two prompt sets: the training prompts with seeds never used for labelling or DDPO (does the policy get better
at what it was trained on?) and a held-out prompt set (does it generalise, and does it still draw what is
asked?). In the toy world the hidden taste and the analyser's prompt-following are ground truth; the learned
reward, next to the hidden score, shows how far the reward model and the truth drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf.evaluate.images import draw
from rlhf.evaluate.metrics import HiddenTaste, Judged, LearnedReward, PromptFollowing, reward_metric, score
from rlhf.toy.tastes import TASTES

EVAL_SEED = 10**9
"""Evaluation seeds start here: far from labelling seeds (prompt x 1000 + k) and DDPO's own generator."""


@dataclass(frozen=True)
class EvalSet:
    name: str
    prompts: list[str]
    seeds: int

    def jobs(self) -> tuple[list[str], list[int]]:
        """(prompt, seed) per image, prompt-major; the seed depends only on the prompt's position and k."""
        prompts = [p for p in self.prompts for _ in range(self.seeds)]
        seeds = [EVAL_SEED + i * 100 + k for i in range(len(self.prompts)) for k in range(self.seeds)]
        return prompts, seeds


def paired_change(after: np.ndarray, before: np.ndarray) -> dict[str, float]:
    """Mean change of per-image scores of two policies on the same prompts and seeds, with its paired standard
    error: the noise a rise must clear."""
    change = np.asarray(after) - np.asarray(before)
    return {"mean": round(float(change.mean()), 4), "se": round(float(change.std(ddof=1) / len(change) ** 0.5), 4)}


def prompt_following(images: np.ndarray, prompts: list[str]) -> float | None:
    """Mean share of the asked attributes the analyser finds (toy prompts only; None for others)."""
    values = PromptFollowing()(Judged(images, prompts))
    return None if values is None else float(values.mean())


def metrics(images: np.ndarray, prompts: list[str], *, reward_model=None, scorers: dict | None = None,
            taste: str | None = None) -> dict:
    """The figures one evaluated image set gets: prompt following (toy prompts; None for others), the learned
    reward's ensemble mean and std, each DDPO-style reward in ``scorers`` (CLIP score, aesthetic head, HPSv2) by name,
    and the hidden taste; each judge is optional. Per-image scores come from ``rlhf.evaluate.metrics.score``, as in
    ``python -m rlhf.evaluate``; this keeps their means."""
    judges = [PromptFollowing()]
    if reward_model is not None:
        judges += [LearnedReward(reward_model), LearnedReward(reward_model, "std")]
    judges += [reward_metric(name, scorer) for name, scorer in (scorers or {}).items()]
    if taste is not None:
        judges.append(HiddenTaste(taste, name="hidden_score"))
    scores = score(Judged(images, prompts), judges)
    return {"images": len(images)} | {name: None if s is None else float(s.mean()) for name, s in scores.items()}
