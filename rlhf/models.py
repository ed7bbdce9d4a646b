"""Load the diffusion pipeline and the CLIP model, by local folder or hub id.

The toy world is only the default value of these arguments: ``load_pipeline()`` loads the shipped tiny
Stable Diffusion exactly as ``load_pipeline("runwayml/stable-diffusion-v1-5")`` loads SD 1.5, and
``load_clip()`` loads the shipped tiny CLIP through the same open_clip call as ``load_clip("ViT-L-14",
"openai")``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rlhf.paths import TOY_CLIP, TOY_PIPELINE


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was asked for and how to fix it."""


def _offline_hint(source: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return f"the hub is offline (HF_HUB_OFFLINE=1): download {source!r} on a connected machine or pass a local folder"
    return "check the hub id or pass a local folder saved with save_pretrained"


def precision_dtype(mixed_precision: str) -> torch.dtype:
    """The weight dtype of a mixed-precision setting: 'fp16', 'bf16', or float32 for 'no'."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def load_pipeline(source: str | Path = TOY_PIPELINE, *, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu"):
    """Any diffusers text-to-image pipeline, from a folder saved with ``save_pretrained`` or a hub id."""
    from diffusers import DiffusionPipeline

    source = str(source)
    if os.sep in source and not Path(source).is_dir():
        raise ModelLoadError(f"no pipeline folder at {source}: run `python -m rlhf.toy.train pipeline` or pass a hub id")
    try:
        pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load pipeline {source!r} ({str(e).splitlines()[0]}); {_offline_hint(source)}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass
class Clip:
    """An open_clip model with its preprocessing and tokenizer: embeds images and texts for rewards."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed_images(self, images: list[np.ndarray | Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings, (N, D)."""
        pil = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
        x = torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings, (N, D)."""
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1)


def load_clip(name: str | Path = TOY_CLIP, pretrained: str | None = None, *, device: str = "cpu") -> Clip:
    """An open_clip model: a folder with ``open_clip_config.json``, a built-in name (``ViT-L-14``) with a
    pretrained tag, or an ``hf-hub:`` id."""
    import open_clip

    name = str(name)
    model_name = f"local-dir:{name}" if Path(name).is_dir() else name
    if os.sep in name and not Path(name).is_dir():
        raise ModelLoadError(f"no CLIP folder at {name}: run `python -m rlhf.toy.train clip` or pass a model name")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"cannot load CLIP {name!r} ({str(e).splitlines()[0]}); {_offline_hint(name)}") from e
    return Clip(model.eval().requires_grad_(False), preprocess, tokenizer, name)
