"""Trajectories of the denoising MDP: every latent, every transition's log-probability, the final images.

DDPO treats each stochastic sampling step x_t -> x_{t-1} as an action of a Gaussian policy (Black et al. 2023,
Sec. 4.2); the sampler records what the policy-gradient update needs to recompute those log-probabilities later.
The pipeline family's adapter (`rlhf.adapters`) supplies the conditioning, the UNet call and the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf.adapters import Conditioning, PipelineAdapter


@dataclass
class Trajectories:
    prompts: list[str]
    cond: Conditioning  # the prompts' conditioning, with CFG's unconditional branch
    latents: torch.Tensor  # (B, T + 1, C, h, w): x_T, ..., x_0
    log_probs: torch.Tensor  # (B, P): log pi(x_{t-1} | x_t) of the P stochastic steps (T, or T - 1 for LCM), averaged over latent dimensions
    timesteps: torch.Tensor  # (T,)
    images: np.ndarray  # (B, H, W, 3) uint8
    x0_images: np.ndarray | None = None  # (B, P, H, W, 3) uint8: each stochastic step's predicted x_0, decoded, if asked for

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(parts: list["Trajectories"]) -> "Trajectories":
        return Trajectories(
            [p for t in parts for p in t.prompts],
            Conditioning.cat([t.cond for t in parts]),
            torch.cat([t.latents for t in parts]),
            torch.cat([t.log_probs for t in parts]),
            parts[0].timesteps,
            np.concatenate([t.images for t in parts]),
            None if parts[0].x0_images is None else np.concatenate([t.x0_images for t in parts]),
        )

    def select(self, idx: torch.Tensor) -> "Trajectories":
        return Trajectories(
            [self.prompts[i] for i in idx.tolist()], self.cond.select(idx), self.latents[idx],
            self.log_probs[idx], self.timesteps, self.images[idx.numpy()],
            None if self.x0_images is None else self.x0_images[idx.numpy()],
        )


def sample_trajectories(pipe, unet, prompts: list[str], *, num_steps: int, eta: float, guidance_scale: float,
                        generator: torch.Generator | list[torch.Generator] | None = None,
                        progress: bool = False, decode_x0: bool = False) -> Trajectories:
    """Run the stochastic policy on ``prompts`` and record the trajectory (under inference mode).

    ``unet`` is passed separately so that a wrapped (LoRA / DDP) UNet samples as the current policy. A list
    of generators, one per prompt, makes each image depend only on its own seed, not on its batch.
    ``decode_x0`` also decodes every stochastic step's predicted x_0, whose reward `state_baseline` turns into a
    baseline.
    """
    adapter = PipelineAdapter(pipe)
    device = pipe.vae.device
    scheduler = adapter.scheduler(num_steps)
    actions = adapter.policy_steps(num_steps)
    with torch.inference_mode():
        cond = adapter.encode(prompts, device)
        x = adapter.initial_noise(len(prompts), scheduler, generator, cond.embeds.dtype)
        latents, log_probs, x0_images = [x], [], []
        for j, t in enumerate(tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False)):
            out = adapter.predict(unet, x, t.to(device), cond, guidance_scale)  # DDIM and LCM: no input scaling
            if j == actions:  # the consistency sampler's last step
                x = adapter.final(scheduler, out, t.to(device), x)
            else:
                step = adapter.step(scheduler, out, t, x, eta, generator=generator)
                x = step.prev_sample.to(cond.embeds.dtype)
                log_probs.append(step.log_prob)
                if decode_x0:
                    x0_images.append(adapter.decode(step.x0_pred))
            latents.append(x)
        images = adapter.decode(x)
    return Trajectories(
        list(prompts), cond.map(torch.clone), torch.stack(latents, dim=1).clone(), torch.stack(log_probs, dim=1).clone(),
        scheduler.timesteps.clone(), images, np.stack(x0_images, axis=1) if decode_x0 else None,
    )
