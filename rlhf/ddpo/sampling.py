"""Trajectories of the denoising MDP: every latent, every transition's log-probability, the final images.

DDPO treats each DDIM step x_t -> x_{t-1} as an action of a Gaussian policy (Black et al. 2023, Sec. 4.2);
the sampler records what the policy-gradient update needs to recompute those log-probabilities later.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from rlhf.ddpo.logprob import ddim_step


@dataclass
class Trajectories:
    prompts: list[str]
    prompt_embeds: torch.Tensor  # (B, L, D)
    negative_embeds: torch.Tensor  # (B, L, D): the empty prompt, CFG's unconditional branch
    latents: torch.Tensor  # (B, T + 1, C, h, w): x_T, ..., x_0
    log_probs: torch.Tensor  # (B, T): log pi(x_{t-1} | x_t), averaged over latent dimensions
    timesteps: torch.Tensor  # (T,)
    images: np.ndarray  # (B, H, W, 3) uint8
    x0_images: np.ndarray | None = None  # (B, T, H, W, 3) uint8: each step's predicted x_0, decoded, if asked for

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(parts: list["Trajectories"]) -> "Trajectories":
        return Trajectories(
            [p for t in parts for p in t.prompts],
            torch.cat([t.prompt_embeds for t in parts]),
            torch.cat([t.negative_embeds for t in parts]),
            torch.cat([t.latents for t in parts]),
            torch.cat([t.log_probs for t in parts]),
            parts[0].timesteps,
            np.concatenate([t.images for t in parts]),
            None if parts[0].x0_images is None else np.concatenate([t.x0_images for t in parts]),
        )

    def select(self, idx: torch.Tensor) -> "Trajectories":
        return Trajectories(
            [self.prompts[i] for i in idx.tolist()], self.prompt_embeds[idx], self.negative_embeds[idx], self.latents[idx],
            self.log_probs[idx], self.timesteps, self.images[idx.numpy()],
            None if self.x0_images is None else self.x0_images[idx.numpy()],
        )


def make_scheduler(pipe, num_steps: int) -> DDIMScheduler:
    """A DDIM scheduler with the pipeline's noise schedule, whatever scheduler the pipeline ships."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_steps)
    return scheduler


def encode_prompts(pipe, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings of ``prompts`` and of the empty prompt (CFG's unconditional branch), (B, L, D) each."""
    embeds, negative = pipe.encode_prompt(prompts, device, 1, True, negative_prompt=[""] * len(prompts))
    return embeds, negative


def guided_noise(unet, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, negative: torch.Tensor,
                 guidance_scale: float) -> torch.Tensor:
    """Classifier-free guided epsilon; ``t`` is a scalar or one timestep per sample."""
    t = t.expand(len(latents)) if t.ndim == 0 else t
    eps = unet(torch.cat([latents, latents]), torch.cat([t, t]), encoder_hidden_states=torch.cat([negative, embeds])).sample
    uncond, cond = eps.chunk(2)  # (B, C, h, w) each
    return uncond + guidance_scale * (cond - uncond)


def decode(pipe, latents: torch.Tensor) -> np.ndarray:
    """VAE decode to uint8 (B, H, W, 3)."""
    x = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return ((x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


def sample_trajectories(pipe, unet, prompts: list[str], *, num_steps: int, eta: float, guidance_scale: float,
                        generator: torch.Generator | list[torch.Generator] | None = None,
                        progress: bool = False, decode_x0: bool = False) -> Trajectories:
    """Run the stochastic DDIM policy on ``prompts`` and record the trajectory (under inference mode).

    ``unet`` is passed separately so that a wrapped (LoRA / DDP) UNet samples as the current policy. A list
    of generators, one per prompt, makes each image depend only on its own seed, not on its batch.
    ``decode_x0`` also decodes every step's predicted x_0, whose reward `state_baseline` turns into a baseline.
    """
    device = pipe.vae.device
    scheduler = make_scheduler(pipe, num_steps)
    with torch.inference_mode():
        embeds, neg = encode_prompts(pipe, prompts, device)
        c, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
        x = randn_tensor((len(prompts), c, size, size), generator=generator, device=device, dtype=embeds.dtype)
        x = x * scheduler.init_noise_sigma
        latents, log_probs, x0_images = [x], [], []
        for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
            eps = guided_noise(unet, x, t.to(device), embeds, neg, guidance_scale)  # DDIM: no input scaling
            step = ddim_step(scheduler, eps, t, x, eta, generator=generator)
            x = step.prev_sample.to(embeds.dtype)
            latents.append(x)
            log_probs.append(step.log_prob)
            if decode_x0:
                x0_images.append(decode(pipe, step.x0_pred))
        images = decode(pipe, x)
    return Trajectories(
        list(prompts), embeds.clone(), neg.clone(), torch.stack(latents, dim=1).clone(), torch.stack(log_probs, dim=1).clone(),
        scheduler.timesteps.clone(), images, np.stack(x0_images, axis=1) if decode_x0 else None,
    )
