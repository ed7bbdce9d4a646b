"""Rewards: ``reward(images, prompts, metadata) -> (rewards, info)``.

Images are uint8 (B, H, W, 3) numpy arrays, so a reward never touches the policy's autograd graph and can
run in a worker thread while the next batch samples. Pick one by name with ``make_reward``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from rlhf.models import Clip, ModelLoadError, load_clip, resolve_file


class Reward(Protocol):
    name: str

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> tuple[np.ndarray, dict]: ...


class NonFiniteReward(ValueError):
    """A reward was NaN or infinite: updating on it would poison the policy."""


def check_finite(rewards: np.ndarray, prompts: list[str], name: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(rewards))
    if len(bad):
        raise NonFiniteReward(
            f"reward {name!r} gave {rewards[bad[0]]} for prompt {prompts[bad[0]]!r} ({len(bad)} of {len(rewards)} "
            f"non-finite); fix the reward function before training"
        )
    return rewards


class JpegSize:
    """The paper's (in)compressibility tasks: JPEG size at quality 95 in kB, negated for compressibility."""

    def __init__(self, sign: float):
        self.sign = sign
        self.name = "jpeg_compressibility" if sign < 0 else "jpeg_incompressibility"

    def __call__(self, images, prompts, metadata):
        sizes = []
        for im in images:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=95)
            sizes.append(buf.tell() / 1000)
        return self.sign * np.array(sizes, np.float32), {}


class ClipScore:
    """Cosine similarity between image and prompt embeddings (open_clip)."""

    name = "clip_score"

    def __init__(self, clip: Clip):
        self.clip = clip

    def __call__(self, images, prompts, metadata):
        img, txt = self.clip.embed_images(list(images)), self.clip.embed_texts(list(prompts))
        return (img * txt).sum(-1).cpu().numpy(), {}


class AestheticHead(torch.nn.Module):
    """The LAION aesthetic predictor's MLP on unit-norm CLIP image embeddings (its ``layers.*`` key names)."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class Aesthetic:
    """LAION-style aesthetic score; needs the head's weights, a file or a hub file (e.g.
    sac+logos+ava1-l14-linearMSE.pth for ViT-L-14)."""

    name = "aesthetic"

    def __init__(self, clip: Clip, weights: str | Path):
        state = torch.load(resolve_file(weights, "aesthetic head weights"), map_location="cpu", weights_only=True)
        dim = state["layers.0.weight"].shape[1]
        self.head = AestheticHead(dim).eval()
        self.head.load_state_dict(state)
        self.clip = clip

    @torch.inference_mode()
    def __call__(self, images, prompts, metadata):
        return self.head(self.clip.embed_images(list(images)).cpu()).numpy(), {}


class HPSv2(ClipScore):
    """Human Preference Score v2 (Wu et al. 2023): the CLIP score under open_clip ViT-H-14 fine-tuned on human
    choices. Needs its checkpoint (HPS_v2.1_compressed.pt), a file or a hub file (xswu/HPSv2/HPS_v2.1_compressed.pt),
    which open_clip loads as it loads any checkpoint file; ``arch`` names another open_clip architecture for other
    preference CLIPs."""

    name = "hpsv2"

    def __init__(self, weights: str | Path, arch: str = "ViT-H-14", device: str = "cpu"):
        super().__init__(load_clip(arch, str(resolve_file(weights, "HPSv2 checkpoint")), device=device))


class TasteReward:
    """A toy world's hidden taste as a reward: exact ground truth for tests and benchmarks."""

    def __init__(self, taste_name: str):
        from rlhf.toy.tastes import get_taste

        self.taste = get_taste(taste_name)
        self.name = f"taste:{taste_name}"

    def __call__(self, images, prompts, metadata):
        return self.taste.score(list(images), list(prompts)), {}


def make_reward(spec: str, clip: Clip | None = None) -> Reward:
    """``jpeg_compressibility``, ``jpeg_incompressibility``, ``clip_score``, ``aesthetic:<weights>``, ``hpsv2:<weights>``,
    ``taste:<name>`` or ``preference:<folder>`` (a learned reward model, ``mean - lambda * std`` of its ensemble);
    CLIP-based rewards use ``clip`` (the toy CLIP by default)."""
    kind, _, arg = spec.partition(":")
    if kind == "jpeg_compressibility":
        return JpegSize(-1.0)
    if kind == "jpeg_incompressibility":
        return JpegSize(1.0)
    if kind == "taste":
        return TasteReward(arg)
    if kind == "clip_score":
        return ClipScore(clip or load_clip())
    if kind == "aesthetic":
        return Aesthetic(clip or load_clip(), arg)
    if kind == "hpsv2":
        return HPSv2(arg)
    if kind == "preference":
        from reward_models.ensemble import MODEL_FILE, RewardModel

        if not (Path(arg) / MODEL_FILE).is_file():
            raise ModelLoadError(f"no reward model at {arg!r} (no {MODEL_FILE}); fit one from labels first")
        return RewardModel.load(arg, clip or load_clip())
    raise ValueError(
        f"unknown reward {spec!r}; use jpeg_compressibility, jpeg_incompressibility, clip_score, aesthetic:<weights>, "
        "hpsv2:<weights>, "
        "taste:<name> or preference:<reward model folder>"
    )
