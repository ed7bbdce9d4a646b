"""The feature map a reward head sees: phi(image, text) = [image, image * text, cos(image, text)].

A within-prompt Bradley-Terry model only ever scores f(a) - f(b) for two images of one prompt, so any
prompt-only feature cancels. Prompt conditioning therefore needs interaction terms: the elementwise
product lets a linear head weight each embedding direction differently per prompt, and the cosine is the
CLIP score itself (what PickScore fine-tunes).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rlhf.models import Clip
from rlhf.paths import ROOT

FEATURE_MAP = "image|image*text|cosine"


def phi(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """(N, 2D + 1) features from unit-norm (N, D) image and text embeddings."""
    image_emb, text_emb = np.asarray(image_emb, np.float32), np.asarray(text_emb, np.float32)
    product = image_emb * text_emb
    return np.concatenate([image_emb, product, product.sum(-1, keepdims=True)], axis=-1)


def backbone_name(clip: Clip) -> str:
    """The CLIP's name plus a fingerprint of its weights.

    A local folder keeps its name when it is retrained (``make train-toy``), so the name alone would let a
    cache or a saved head silently pair with other weights; the fingerprint (a few values of every tensor)
    costs milliseconds even for ViT-L.
    """
    name = clip.name
    path = Path(name)
    if path.is_dir():
        path = path.resolve()
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    digest = hashlib.sha256()
    for key, tensor in clip.model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return f"{name}@{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature map on which backbone: saved with every model so a load can refuse a mismatch."""

    backbone: str
    name: str = FEATURE_MAP

    def __call__(self, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        if self.name != FEATURE_MAP:
            raise ValueError(f"unknown feature map {self.name!r}; this version computes only {FEATURE_MAP!r}")
        return phi(image_emb, text_emb)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
