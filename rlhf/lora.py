"""What every fine-tuning method shares: a LoRA on the UNet (or the whole UNet), its export in the format
``pipe.load_lora_weights`` reads, and checkpoints written into a temporary folder renamed into place when complete."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from rlhf.faults import crashpoint

LORA_FILE = "pytorch_lora_weights.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed here; the message says why and what to do."""


def base_fingerprint(unet) -> str:
    """Identifies the base UNet (config and first weights) so a checkpoint is never resumed on another model."""
    h = hashlib.sha256(json.dumps({k: str(v) for k, v in sorted(unet.config.items())}).encode())
    h.update(unet.conv_in.weight.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def prepare_policy(pipe, dtype: torch.dtype, use_lora: bool, rank: int, targets, frozen_copy: bool):
    """Freeze the pipeline in ``dtype`` and make the policy trainable: a LoRA on the UNet, or the whole UNet in
    fp32. Returns (trainable parameters, a frozen copy of the starting UNet for full fine-tuning with
    ``frozen_copy``, else None)."""
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):
        part.requires_grad_(False)
        if dtype != torch.float32:
            part.to(dtype=dtype)
    unet, reference = pipe.unet, None
    if use_lora:
        add_lora(unet, rank, targets)
    else:
        if frozen_copy:
            reference = copy.deepcopy(unet).eval()
        unet.float().requires_grad_(True)
    return [p for p in unet.parameters() if p.requires_grad], reference


def add_lora(unet, rank: int, targets: tuple[str, ...] | list[str]) -> None:
    """A LoRA of ``rank`` on ``targets`` (Gaussian init, alpha = rank), its weights in fp32: fp16 LoRA updates
    underflow to NaN."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def save_policy(unet, folder: Path, use_lora: bool) -> None:
    """The LoRA as ``pytorch_lora_weights.safetensors`` (diffusers' format), or the whole UNet in ``unet/``."""
    if use_lora:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(
            get_peft_model_state_dict(unet)))
    else:
        unet.save_pretrained(folder / "unet")


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` and rename it to ``final`` once the block has written it, so a
    crash never leaves a half-written ``final`` behind."""
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    crashpoint("checkpoint")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def trainable_state(unet) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu() for n, p in unet.named_parameters() if p.requires_grad}


def restore_trainable(unet, trainable: dict[str, torch.Tensor], path: Path) -> None:
    """Copy a checkpoint's trained weights into ``unet``, refusing one that trained other parameters."""
    params = dict(unet.named_parameters())
    if set(trainable) != {n for n, p in params.items() if p.requires_grad}:
        raise CheckpointError(f"checkpoint {path} trained other parameters (LoRA vs full fine-tuning, or another "
                              "LoRA rank) than this config; use the settings it was trained with")
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)


def load_trained(unet, path: Path | str, base: str) -> dict:
    """Copy the trained weights of any method's checkpoint (DDPO's epoch-NNNN, a direct method's step-NNNNNN) into
    ``unet`` (unwrapped), refusing one of another base model; returns the checkpoint's whole state."""
    path = Path(path)
    state_file = path / "trainer_state.pt"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint (no trainer_state.pt); pass a checkpoints/epoch-NNNN or "
                              "checkpoints/step-NNNNNN folder")
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    if state["base"] != base:
        raise CheckpointError(f"checkpoint {path} was trained on another base model (fingerprint {state['base']}, "
                              f"this one {base}); load the base model it was made from or start a new run")
    restore_trainable(unet, state["trainable"], path)
    return state


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest complete checkpoint of a training run (``checkpoints/epoch-NNNN`` or ``checkpoints/step-NNNNNN``)."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(p for p in folder.glob("*-*") if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    return found[-1] if found else None


def make_accelerator(run_dir: Path, mixed_precision: str, config: dict):
    """An Accelerator logging to tensorboard under ``run_dir``; CPU processes (gloo) where no GPU is, where mixed
    precision is off. ``config``'s scalars are logged as the run's settings."""
    from accelerate import Accelerator

    on_gpu = torch.cuda.is_available()  # cpu=True is what lets accelerate run several CPU processes over gloo
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed_precision if on_gpu else "no",
                              log_with="tensorboard", project_dir=str(run_dir))
    accelerator.init_trackers("tensorboard", config={k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))})
    return accelerator


@contextlib.contextmanager
def reference_model(unet, frozen_copy=None) -> Iterator:
    """The starting model, to compare the policy with: ``frozen_copy`` (full fine-tuning), else ``unet`` (unwrapped)
    with its LoRA switched off for the block."""
    if frozen_copy is not None:
        yield frozen_copy
        return
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()
