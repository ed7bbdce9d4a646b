"""Training on labelled pairs directly. `PreferenceTrainer` holds what the direct methods share: the LoRA (or whole
UNet), AdamW, shuffled passes over the pairs split across processes, gradient accumulation, logging and checkpoints
(``checkpoints/step-NNNNNN``: the policy in the format ``pipe.load_lora_weights`` reads and everything an exact
resume needs, written into a temporary folder renamed into place). `DiffusionDPOTrainer` noises both images of a
pair with one timestep and one noise, scores the policy's and the reference's denoising errors and descends
`rlhf.dpo.loss.diffusion_dpo_loss`; its reference is the base model: the LoRA switched off (no copy of the UNet),
or a frozen copy for full fine-tuning. D3PO is in `rlhf.dpo.d3po`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.utils.torch_utils import randn_tensor

from rlhf.adapters import Conditioning, PipelineAdapter
from rlhf.dpo.config import DPOConfig
from rlhf.dpo.data import PreferencePair, load_pixels
from rlhf.dpo.loss import diffusion_dpo_loss
from rlhf.faults import crashpoint
from rlhf.lora import (CheckpointError, atomic_folder, base_fingerprint, load_trained,
                       make_accelerator, prepare_policy, reference_model, save_policy, trainable_state)
from rlhf.models import precision_dtype


class PreferenceTrainer:
    METHOD = ""
    NEEDS_REFERENCE_COPY = True
    """full fine-tuning keeps a frozen copy of the starting UNet as the reference"""

    def __init__(self, pipe, cfg: DPOConfig, run_dir: Path | str, accelerator: Accelerator | None = None):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        if accelerator is None:  # scalars and grids go to tensorboard under run_dir/tensorboard
            accelerator = make_accelerator(self.run_dir, cfg.mixed_precision, dataclasses.asdict(cfg))
        self.accelerator = accelerator
        self.pipe = pipe.to(accelerator.device)
        set_seed(cfg.seed, device_specific=True)
        self.rng = np.random.default_rng(cfg.seed + accelerator.process_index)  # timesteps and noise, per process
        self.order_rng = np.random.default_rng(cfg.seed)  # the pair order, the same on every process
        self._prepare_models()
        self.step = 0
        self.saved_step: int | None = None
        self.order: list[int] = []  # the rest of the current pass over the pairs

    def _prepare_models(self) -> None:
        cfg, pipe, acc = self.cfg, self.pipe, self.accelerator
        self.params, self.ref_unet = prepare_policy(pipe, precision_dtype(acc.mixed_precision), cfg.use_lora, cfg.lora_rank,
                                                    cfg.lora_targets, frozen_copy=self.NEEDS_REFERENCE_COPY)
        self.base = base_fingerprint(pipe.unet)
        lr = cfg.learning_rate * (cfg.train_batch_size * cfg.gradient_accumulation_steps * acc.num_processes
                                  if cfg.scale_lr else 1)
        optimizer = torch.optim.AdamW(self.params, lr=lr, betas=cfg.adam_betas, weight_decay=cfg.adam_weight_decay,
                                      eps=cfg.adam_epsilon)
        self.unet, self.optimizer = acc.prepare(pipe.unet, optimizer)

    def accumulate(self, batch: list, scale: float) -> dict:
        """Backpropagate ``scale`` x the loss of one micro-batch of pairs; returns its scalars."""
        raise NotImplementedError

    # ----------------------------------------------------------------- training
    def _next_batch(self, pairs: list[PreferencePair]) -> list[PreferencePair]:
        """This process's next micro-batch: shuffled passes over the pairs, each process taking its own stride."""
        acc, n = self.accelerator, self.cfg.train_batch_size * self.accelerator.num_processes
        while len(self.order) < n:
            self.order += self.order_rng.permutation(len(pairs)).tolist()
        chosen, self.order = self.order[:n], self.order[n:]
        return [pairs[i] for i in chosen[acc.process_index::acc.num_processes]]

    def train(self, pairs: list[PreferencePair], steps: int | None = None, progress: bool = True) -> list[dict]:
        """Optimizer steps (``steps``, default: up to max_train_steps) over ``pairs``; logs and checkpoints."""
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        target = steps if steps is not None else cfg.max_train_steps - self.step
        history = []
        self.unet.train()
        with tqdm(range(target), desc=self.METHOD, disable=not (progress and acc.is_main_process)) as bar:
            for _ in bar:
                t0, logs = time.perf_counter(), {}
                for m in range(cfg.gradient_accumulation_steps):
                    last = m == cfg.gradient_accumulation_steps - 1
                    with contextlib.nullcontext() if last else acc.no_sync(self.unet):
                        info = self.accumulate(self._next_batch(pairs), 1 / cfg.gradient_accumulation_steps)
                    for k, v in info.items():
                        logs.setdefault(k, []).append(v)
                grad_norm = float(acc.clip_grad_norm_(self.params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                crashpoint("dpo_step")
                self.step += 1
                metrics = {k: float(np.mean(v)) for k, v in logs.items()} | {
                    "step": self.step, "train/grad_norm": grad_norm, "time/step_s": time.perf_counter() - t0}
                self._log(metrics)
                history.append(metrics)
                bar.set_postfix(loss=f"{metrics['dpo/loss']:.4f}", acc=f"{metrics['dpo/implicit_acc']:.2f}")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
        return history

    def _log(self, metrics: dict) -> None:
        self.accelerator.log(metrics, step=self.step)
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        self.saved_step = self.step
        if not acc.is_main_process:
            return None
        final = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
        unet = acc.unwrap_model(self.unet)
        with atomic_folder(final) as tmp:
            save_policy(unet, tmp, self.cfg.use_lora)
            torch.save({
                "method": self.METHOD, "step": self.step, "base": self.base, "config": dataclasses.asdict(self.cfg),
                "trainable": trainable_state(unet), "optimizer": self.optimizer.state_dict(), "order": list(self.order),
                "rng": {"numpy": self.rng.bit_generator.state, "order": self.order_rng.bit_generator.state,
                        "torch": torch.get_rng_state(), "python": random.getstate()},
            }, tmp / "trainer_state.pt")
        return final

    def load_policy(self, path: Path | str) -> dict:
        """Start from any method's checkpoint's trained weights only (a new round's fresh optimizer); returns its state."""
        return load_trained(self.accelerator.unwrap_model(self.unet), path, self.base)

    def load_checkpoint(self, path: Path | str) -> None:
        """Restore policy, optimizer, pair order, RNG and step exactly as saved."""
        state = self.load_policy(path)
        if state.get("method") != self.METHOD:
            raise CheckpointError(f"{path} is a {state.get('method', 'DDPO')} checkpoint, not {self.METHOD}; resume it "
                                  "with its own method or start a new run folder")
        self.optimizer.load_state_dict(state["optimizer"])
        self.order = list(state["order"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.order_rng.bit_generator.state = state["rng"]["order"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step = self.saved_step = state["step"]


CACHE_SIZE = 4096
"""prompts whose text conditioning, and images whose VAE posterior, a Diffusion-DPO trainer keeps (SD 1.5: 236
and 131 KB each)"""


def remember(cache: OrderedDict, keys: list) -> None:
    """Mark ``keys`` as the most recently used, and forget the least recent beyond CACHE_SIZE."""
    for key in keys:
        cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


class DiffusionDPOTrainer(PreferenceTrainer):
    METHOD = "diffusion_dpo"

    def __init__(self, pipe, cfg: DPOConfig, run_dir: Path | str, accelerator: Accelerator | None = None):
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        if self.noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {self.noise_scheduler.config.prediction_type!r}: Diffusion-DPO here "
                             "supports 'epsilon' and 'v_prediction'")
        self.resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.adapter = PipelineAdapter(pipe)
        self.embed_cache: OrderedDict[str, Conditioning] = OrderedDict()
        self.posteriors: OrderedDict[str | bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        super().__init__(pipe, cfg, run_dir, accelerator)

    # ----------------------------------------------------------------- the loss of a batch of pairs
    def latents(self, sources: list[Path | bytes]) -> torch.Tensor:
        """VAE latents (B, C, h, w) of images at the pipeline's resolution, drawn from the posterior as in training.
        The VAE is frozen, so each image's posterior (mean, std) is computed once and kept (the most recent
        CACHE_SIZE images); a fresh draw from it each step is the draw `latent_dist.sample()` makes."""
        keys = [s if isinstance(s, bytes) else str(s) for s in sources]
        missing = {k: s for k, s in zip(keys, sources) if k not in self.posteriors}
        vae = self.pipe.vae
        if missing:
            pixels = np.stack([load_pixels(s, self.resolution) for s in missing.values()])  # (b, H, W, 3) uint8
            x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (b, 3, H, W) in [-1, 1]
            with torch.no_grad():
                dist = vae.encode(x.to(self.accelerator.device, vae.dtype)).latent_dist
            self.posteriors.update((k, (dist.mean[i], dist.std[i])) for i, k in enumerate(missing))
        mean, std = (torch.stack(v) for v in zip(*(self.posteriors[k] for k in keys)))  # (B, C, h, w) each
        remember(self.posteriors, keys)
        z = mean + std * randn_tensor(mean.shape, device=mean.device, dtype=mean.dtype)
        return z * vae.config.scaling_factor

    def encode(self, prompts: list[str]) -> Conditioning:
        """The prompts' unguided conditioning. The text encoders are frozen, so a prompt is encoded once and kept
        (the most recent CACHE_SIZE of them): the encoder's forward was 4% of a toy step."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.embed_cache]
        if missing:
            fresh = self.adapter.encode(missing, self.accelerator.device, guided=False)
            self.embed_cache.update((p, fresh.select(torch.tensor([i]))) for i, p in enumerate(missing))
        cond = Conditioning.cat([self.embed_cache[p] for p in prompts])
        remember(self.embed_cache, prompts)
        return cond

    def errors(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: Conditioning, target: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared error of ``unet``'s unguided prediction against ``target``, (2B,)."""
        with self.accelerator.autocast():
            pred = self.adapter.predict(unet, noisy, t, cond, None)  # (2B, C, h, w)
        return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))

    def pair_loss(self, pairs: list[PreferencePair]) -> tuple[torch.Tensor, dict]:
        """Winners and losers noised with one timestep and one noise per pair, then the Diffusion-DPO loss."""
        scheduler, device = self.noise_scheduler, self.accelerator.device
        z = self.latents([p.winner for p in pairs] + [p.loser for p in pairs])  # (2B, C, h, w): winners, then losers
        b = len(pairs)
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        noise = torch.randn(z[:b].shape, generator=gen).to(device, z.dtype).repeat(2, 1, 1, 1)  # (2B, C, h, w)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device).repeat(2)  # (2B,)
        noisy = scheduler.add_noise(z, noise, t)
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(z, noise, t)
        cond = self.encode([p.prompt for p in pairs]).repeat(2)  # (2B, ...), no CFG
        err = self.errors(self.unet, noisy, t, cond, target)
        with torch.no_grad(), reference_model(self.accelerator.unwrap_model(self.unet), self.ref_unet) as ref:
            ref_err = self.errors(ref, noisy, t, cond, target)
        loss, info = diffusion_dpo_loss(*err.chunk(2), *ref_err.chunk(2), self.cfg.beta)
        return loss, {f"dpo/{k}": float(v) for k, v in info.items()} | {"dpo/loss": float(loss.detach())}

    def accumulate(self, batch: list[PreferencePair], scale: float) -> dict:
        loss, info = self.pair_loss(batch)
        self.accelerator.backward(loss * scale)
        return info
