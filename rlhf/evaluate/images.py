"""Drawing the images an evaluation judges: one per (model, prompt, seed), cached on disk.

Every model is drawn on the same seeds, so its scores pair with the base's unit by unit. The cache keys an image by
everything it depends on: the pipeline (and, for a local folder, its UNet file's size and time), the policy's
weights hash, the prompt, the seed and the sampler settings, so a re-run draws only what is missing.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from rlhf.ddpo.sampling import sample_trajectories
from rlhf.lora import LORA_FILE
from rlhf.models import ModelLoadError, load_pipeline, precision_dtype, resolve_pipeline

UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def draw(pipe, unet, prompts: list[str], seeds: list[int], *, num_steps: int, eta: float, guidance_scale: float,
         batch_size: int = 32, progress: tqdm | None = None) -> np.ndarray:
    """One image per (prompt, seed) from the stochastic DDIM policy, each depending only on its own seed."""
    images = []
    for start in range(0, len(prompts), batch_size):
        gens = [torch.Generator(pipe.vae.device).manual_seed(s) for s in seeds[start:start + batch_size]]
        traj = sample_trajectories(pipe, unet, prompts[start:start + batch_size], num_steps=num_steps, eta=eta,
                                   guidance_scale=guidance_scale, generator=gens)
        images.append(traj.images)
        if progress is not None:
            progress.update(len(traj.images))
    return np.concatenate(images)


def policy_weights(folder: Path) -> Path:
    """The weights file of a policy folder: a LoRA in diffusers' format, or the UNet of full fine-tuning."""
    candidates = [folder / LORA_FILE] + [folder / "unet" / name for name in UNET_WEIGHTS]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ModelLoadError(f"{folder} holds no {LORA_FILE} and no unet/ weights: pass a LoRA folder "
                             "saved with save_lora_weights or a DDPO checkpoint (round-NNN/ddpo/checkpoints/epoch-NNNN)")
    return found


def load_policy(source: str | Path, checkpoint: Path | None, *, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu"):
    """The pipeline with a policy loaded into it: a LoRA (diffusers' own loader) or the saved UNet of full
    fine-tuning; ``checkpoint`` None gives the base model."""
    pipe = load_pipeline(source, dtype=dtype, device=device)
    if checkpoint is not None:
        if (checkpoint / "unet").is_dir():
            pipe.unet = type(pipe.unet).from_pretrained(checkpoint / "unet", torch_dtype=dtype).to(device)
        else:
            pipe.unet.load_lora_adapter(checkpoint, prefix="unet", weight_name=LORA_FILE)
    return pipe


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Model:
    """One row of the table: a pipeline, optionally with a policy (LoRA or fine-tuned UNet) loaded into it."""

    name: str
    pipeline: str
    policy: Path | None = None

    def fingerprint(self) -> dict:
        """What this model's images depend on, for the cache key."""
        repo, revision = resolve_pipeline(self.pipeline)
        out = {"pipeline": repo, "revision": revision}
        if Path(repo).is_dir():
            unet = next((Path(repo) / "unet" / n for n in UNET_WEIGHTS if (Path(repo) / "unet" / n).is_file()), None)
            out["unet"] = [unet.stat().st_size, unet.stat().st_mtime_ns] if unet else None
        out["policy_sha256"] = file_sha256(policy_weights(self.policy)) if self.policy else None
        return out


@dataclass(frozen=True)
class Sampler:
    """How every model is drawn: the DDIM policy's steps, eta and guidance, and the weights' dtype."""

    num_steps: int
    eta: float
    guidance_scale: float
    mixed_precision: str = "no"

    def dtype(self, device: torch.device) -> torch.dtype:
        return precision_dtype(self.mixed_precision) if device.type == "cuda" else torch.float32


class ImageCache:
    """PNG files under ``folder``, one per (model fingerprint, prompt, seed, sampler)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, fingerprint: dict, sampler: Sampler, prompt: str, seed: int) -> Path:
        key = json.dumps({"model": fingerprint, "sampler": vars(sampler), "prompt": prompt, "seed": seed}, sort_keys=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.folder / name[:2] / f"{name}.png"

    def images(self, model: Model, prompts: list[str], seeds: list[int], sampler: Sampler,
               device: torch.device, batch_size: int = 32) -> tuple[np.ndarray, int]:
        """Every (prompt, seed) image of ``model``, drawing only those not cached; (images, how many were drawn)."""
        fingerprint = model.fingerprint()
        paths = [self.path(fingerprint, sampler, p, s) for p, s in zip(prompts, seeds)]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            pipe = load_policy(model.pipeline, model.policy, dtype=sampler.dtype(device), device=device)
            with tqdm(total=len(missing), desc=f"drawing {model.name}", unit="image") as bar:
                for start in range(0, len(missing), batch_size):
                    chunk = missing[start:start + batch_size]
                    drawn = draw(pipe, pipe.unet, [prompts[i] for i in chunk], [seeds[i] for i in chunk],
                                 num_steps=sampler.num_steps, eta=sampler.eta, guidance_scale=sampler.guidance_scale,
                                 batch_size=batch_size, progress=bar)
                    for i, image in zip(chunk, drawn):
                        write_png(paths[i], image)
            del pipe
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]), len(missing)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 image as PNG, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
