"""Metrics: per-image scores of one image set, computed by ``score`` for the rounds' eval phase and for
``python -m rlhf.evaluate`` alike.

A metric maps a ``Judged`` image set to one score per image, or to None where it does not apply to the prompts
(the analyser reads toy captions only). What several metrics read is computed once per set: each CLIP's image
and prompt embeddings (the CLIP score, the aesthetic head and the learned reward share one backbone's), and the
analyser's reading of each image (prompt following, the hidden tastes, the toy captioner).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from rlhf.ddpo.rewards import Aesthetic, ClipScore
from rlhf.models import Clip
from rlhf.toy.analyse import Analysis, analyse
from rlhf.toy.tastes import TASTES, get_taste
from rlhf.toy.world import parse_caption


class Judged:
    """One image set under judgement: uint8 (H, W, 3) images, the prompt of each, and what metrics share."""

    def __init__(self, images: Sequence[np.ndarray], prompts: Sequence[str], batch_size: int = 64):
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts; give one prompt per image")
        self.images, self.prompts, self.batch_size = list(images), list(prompts), batch_size
        self.unique_prompts = list(dict.fromkeys(self.prompts))
        position = {p: i for i, p in enumerate(self.unique_prompts)}
        self.prompt_index = np.array([position[p] for p in self.prompts], np.int64)  # (N,) into unique_prompts
        self._embeddings: dict[tuple[int, str], tuple[Clip, torch.Tensor]] = {}
        self._analyses: list[Analysis] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def image_embeddings(self, clip: Clip) -> torch.Tensor:
        """Unit-norm image embeddings under ``clip``, (N, D), computed once per backbone."""
        key = (id(clip), "image")
        if key not in self._embeddings:
            chunks = [clip.embed_images(self.images[i:i + self.batch_size]) for i in range(0, len(self), self.batch_size)]
            self._embeddings[key] = clip, torch.cat(chunks).cpu()
        return self._embeddings[key][1]

    def text_embeddings(self, clip: Clip) -> torch.Tensor:
        """Unit-norm embeddings of each image's prompt under ``clip``, (N, D); each distinct prompt embedded once."""
        key = (id(clip), "text")
        if key not in self._embeddings:
            unique = self.unique_prompts
            chunks = [clip.embed_texts(unique[i:i + self.batch_size]) for i in range(0, len(unique), self.batch_size)]
            self._embeddings[key] = clip, torch.cat(chunks).cpu()[self.prompt_index]
        return self._embeddings[key][1]

    def analyses(self) -> list[Analysis]:
        """The toy analyser's reading of every image, computed once."""
        if self._analyses is None:
            self._analyses = [analyse(im) for im in self.images]
        return self._analyses


class Metric(Protocol):
    name: str
    """key in eval.json and in the evaluation's JSON"""
    title: str
    """column title of the tables"""

    def __call__(self, judged: Judged) -> np.ndarray | None:
        """(N,) float scores, one per image; None where the metric does not apply to these prompts."""


class ClipCosine:
    """Cosine of image and prompt embeddings under one CLIP: the CLIP score, and HPSv2 under its fine-tuned CLIP
    (what ``rlhf.ddpo.rewards.ClipScore`` and ``HPSv2`` compute, on the shared embeddings)."""

    def __init__(self, clip: Clip, name: str = "clip_score", title: str = "CLIP score"):
        self.clip, self.name, self.title = clip, name, title

    def __call__(self, judged: Judged) -> np.ndarray:
        return (judged.image_embeddings(self.clip) * judged.text_embeddings(self.clip)).sum(-1).numpy()


class AestheticScore:
    """The LAION aesthetic predictor (``rlhf.ddpo.rewards.Aesthetic``'s MLP) on the shared image embeddings."""

    name, title = "aesthetic", "aesthetic (LAION)"

    def __init__(self, aesthetic: Aesthetic):
        self.aesthetic = aesthetic

    @torch.inference_mode()
    def __call__(self, judged: Judged) -> np.ndarray:
        return self.aesthetic.head(judged.image_embeddings(self.aesthetic.clip)).numpy()


class LearnedReward:
    """A saved reward model's ensemble mean (or, with ``part="std"``, its spread) in logits."""

    def __init__(self, reward_model, part: str = "mean"):
        if part not in ("mean", "std"):
            raise ValueError(f"part={part!r}; use 'mean' or 'std'")
        self.reward_model, self.part = reward_model, part
        self.name = "learned_reward" if part == "mean" else "learned_reward_std"
        self.title = "learned reward" if part == "mean" else "learned reward spread"

    def __call__(self, judged: Judged) -> np.ndarray:
        rm = self.reward_model
        features = rm.spec(judged.image_embeddings(rm.clip).numpy(), judged.text_embeddings(rm.clip).numpy())
        mean, std = rm.ensemble.predict(features)
        return np.asarray(mean if self.part == "mean" else std, np.float64)


class PromptFollowing:
    """Share of the caption's attributes (shape, colour, background, count, size, place) the analyser finds."""

    name, title = "prompt_following", "prompt following"
    applies_to = "toy captions only (rlhf/toy/world.py), which the analyser can check"

    def __call__(self, judged: Judged) -> np.ndarray | None:
        if any(parse_caption(p) is None for p in judged.unique_prompts):
            return None
        return taste_scores("faithful", judged)


class HiddenTaste:
    """A toy world's hidden taste (``rlhf/toy/tastes.py``): the ground truth a synthetic labeller judges by."""

    def __init__(self, taste: str, name: str | None = None):
        get_taste(taste)
        self.taste, self.name, self.title = taste, name or f"taste:{taste}", f"hidden taste {taste}"

    def __call__(self, judged: Judged) -> np.ndarray:
        return taste_scores(self.taste, judged)


def taste_scores(taste: str, judged: Judged) -> np.ndarray:
    """A taste's score of every image from the shared analyses (``Taste.__call__`` without re-analysing)."""
    parts = TASTES[taste].parts
    asked = {p: parse_caption(p) for p in judged.unique_prompts}
    return np.array([sum(w * fn(im, a, asked[p]) for fn, w in parts)
                     for im, a, p in zip(judged.images, judged.analyses(), judged.prompts)], np.float64)


def reward_metric(name: str, reward) -> Metric:
    """A reward of ``rlhf.ddpo.rewards`` the rounds judge with, as a metric on the shared embeddings."""
    if isinstance(reward, Aesthetic):
        return AestheticScore(reward)
    if isinstance(reward, ClipScore):  # HPSv2 is a ClipScore under its own CLIP
        return ClipCosine(reward.clip, name, "HPSv2" if name == "hpsv2" else "CLIP score")
    raise TypeError(f"no metric for reward {type(reward).__name__}; judge with ClipScore, HPSv2 or Aesthetic")


def score(judged: Judged, metrics: Sequence[Metric]) -> dict[str, np.ndarray | None]:
    """Each metric's per-image scores (None where it does not apply), in the order given."""
    out: dict[str, np.ndarray | None] = {}
    for metric in metrics:
        values = metric(judged)
        if values is not None:
            values = np.asarray(values, np.float64)
            if values.shape != (len(judged),):
                raise ValueError(f"metric {metric.name!r} gave scores of shape {values.shape} for {len(judged)} "
                                 "images; a metric returns one finite score per image")
            if not np.isfinite(values).all():
                raise ValueError(f"metric {metric.name!r} gave {int((~np.isfinite(values)).sum())} non-finite scores; "
                                 "a metric returns one finite score per image")
        out[metric.name] = values
    return out
