"""One adapter per pipeline family: what the samplers and trainers need of a diffusers text-to-image pipeline.

Three things differ between families, and each is decided once, here:

- **Prompt conditioning**, by pipeline class. SD 1.x/2.x and latent consistency models have one CLIP text
  encoder; SDXL has two, whose hidden states are concatenated, plus the second one's pooled embedding and the
  ``add_time_ids`` (original size, crop, target size) that its UNet adds to the time embedding.
- **Guidance**. Classifier-free guidance (an unconditional and a conditional branch, eps_u + w (eps_c - eps_u))
  unless the UNet embeds the guidance scale (``time_cond_proj_dim``, as a distilled LCM does): then one branch,
  fed w - 1 through `get_guidance_scale_embedding`, which is how diffusers' LCM pipeline runs it (the LCM paper's
  scale omega is the pipeline's guidance_scale - 1). Negative prompts do not exist for such a model.
- **The policy step**, by scheduler. A pipeline whose scheduler is an `LCMScheduler` samples with the multistep
  consistency sampler (`lcm_step`: every step but the last is Gaussian, so its log-prob is exact); any other
  scheduler is replaced by DDIM on the pipeline's own noise schedule (`ddim_step`, stochastic with eta > 0).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, LCMScheduler
from diffusers.utils.torch_utils import randn_tensor

from rlhf.ddpo.logprob import GaussianStep, consistency_prediction, ddim_step, lcm_step
from rlhf.models import PIPELINE_FAMILIES, ModelLoadError


@dataclass
class Conditioning:
    """A batch's prompt conditioning, each tensor batch-first; the ``negative`` ones are CFG's unconditional branch
    (the empty prompt), None without classifier-free guidance."""

    embeds: torch.Tensor  # (B, L, D) the text encoder(s)' hidden states
    negative: torch.Tensor | None = None  # (B, L, D)
    pooled: torch.Tensor | None = None  # (B, P) SDXL: the second text encoder's pooled projection
    negative_pooled: torch.Tensor | None = None  # (B, P)
    time_ids: torch.Tensor | None = None  # (B, 6) SDXL: original size, crop corner, target size

    def __len__(self) -> int:
        return len(self.embeds)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Conditioning":
        return replace(self, **{f.name: fn(v) for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def select(self, idx: torch.Tensor) -> "Conditioning":
        return self.map(lambda v: v[idx])

    def repeat_interleave(self, k: int) -> "Conditioning":
        return self.map(lambda v: v.repeat_interleave(k, 0))

    def repeat(self, k: int) -> "Conditioning":
        return self.map(lambda v: v.repeat(k, *(1,) * (v.ndim - 1)))

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        return Conditioning(**{f.name: None if getattr(parts[0], f.name) is None else torch.cat([getattr(p, f.name) for p in parts])
                               for f in fields(Conditioning)})


def family(pipe) -> str:
    """The family of a pipeline by its class (a subclass counts as its base); one line naming the supported ones
    otherwise."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[cls.__name__]
    raise ModelLoadError(f"{type(pipe).__name__} is not a supported pipeline; supported: {', '.join(PIPELINE_FAMILIES)} "
                         "(or a pipeline derived from one)")


class PipelineAdapter:
    """Encode prompts, call the UNet with its family's extra conditioning, take one policy step, decode."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.family = family(pipe)
        self.embedded_guidance = pipe.unet.config.get("time_cond_proj_dim") is not None
        self.consistency = isinstance(pipe.scheduler, LCMScheduler)
        if self.family == "sdxl" and pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast:
            pipe.vae.to(torch.float32)  # SDXL's VAE overflows in fp16; its pipeline upcasts it the same way

    # ----------------------------------------------------------------- the schedule and its steps
    def scheduler(self, num_steps: int) -> DDIMScheduler | LCMScheduler:
        """A fresh scheduler of ``num_steps`` on the pipeline's noise schedule: LCM's own, or DDIM."""
        scheduler = (LCMScheduler if self.consistency else DDIMScheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_steps)
        return scheduler

    def policy_steps(self, num_steps: int) -> int:
        """How many of ``num_steps`` are stochastic actions with a log-density: all for DDIM; all but the last
        for LCM, whose last step returns its consistency prediction."""
        return num_steps - 1 if self.consistency else num_steps

    def step(self, scheduler, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor, eta: float,
             **draw) -> GaussianStep:
        """One policy step x_t -> x_{t-1} and its log-density; ``draw`` is ``prev_sample``, ``generator`` or
        ``variance_noise`` as `ddim_step` takes them. eta is DDIM's; the consistency sampler has its own noise."""
        if self.consistency:
            return lcm_step(scheduler, model_output, t, x, **draw)
        return ddim_step(scheduler, model_output, t, x, eta, **draw)

    def final(self, scheduler, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The consistency sampler's deterministic last step: its x_0 prediction, in x's dtype."""
        return consistency_prediction(scheduler, model_output, t.reshape(-1), x).to(x.dtype)

    # ----------------------------------------------------------------- conditioning and the UNet
    def encode(self, prompts: list[str], device: torch.device | str, guided: bool = True) -> Conditioning:
        """Text conditioning of ``prompts``; with ``guided`` and classifier-free guidance also the empty prompt's,
        exactly as the family's pipeline encodes them."""
        n, cfg = len(prompts), guided and not self.embedded_guidance
        if self.family != "sdxl":
            embeds, negative = self.pipe.encode_prompt(prompts, device, 1, cfg, negative_prompt=[""] * n if cfg else None)
            return Conditioning(embeds, negative if cfg else None)
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                                            do_classifier_free_guidance=cfg)
        size = (self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor,) * 2
        encoder_2 = self.pipe.text_encoder_2
        time_ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=(
            int(pooled.shape[-1]) if encoder_2 is None else encoder_2.config.projection_dim))
        return Conditioning(embeds, negative if cfg else None, pooled, negative_pooled if cfg else None,
                            time_ids.to(device).repeat(n, 1))

    def predict(self, unet, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance_scale: float | None) -> torch.Tensor:
        """The (guided) model output at (x_t, t); ``t`` is a scalar or one timestep per sample. With
        ``guidance_scale`` None, the plain conditional prediction (what Diffusion-DPO trains)."""
        t = t.expand(len(x)) if t.ndim == 0 else t
        if cond.negative is None or guidance_scale is None:
            return self._unet(unet, x, t, cond.embeds, cond.pooled, cond.time_ids, guidance_scale)
        both = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731  unconditional first, as diffusers
        out = self._unet(unet, both(x, x), both(t, t), both(cond.negative, cond.embeds),
                         both(cond.negative_pooled, cond.pooled), both(cond.time_ids, cond.time_ids), guidance_scale)
        uncond, conditional = out.chunk(2)  # (B, C, h, w) each
        return uncond + guidance_scale * (conditional - uncond)

    def _unet(self, unet, x, t, embeds, pooled, time_ids, guidance_scale) -> torch.Tensor:
        kwargs = {}
        if pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        if self.embedded_guidance and guidance_scale is not None:
            w = torch.full((len(x),), guidance_scale - 1.0)
            kwargs["timestep_cond"] = self.pipe.get_guidance_scale_embedding(
                w, embedding_dim=self.pipe.unet.config.time_cond_proj_dim).to(x.device, x.dtype)
        return unet(x, t, encoder_hidden_states=embeds, **kwargs).sample

    # ----------------------------------------------------------------- latents and pixels
    def initial_noise(self, n: int, scheduler, generator, dtype: torch.dtype) -> torch.Tensor:
        """x_T for ``n`` images at the pipeline's default size, the same draw as the pipeline's prepare_latents."""
        unet = self.pipe.unet.config
        x = randn_tensor((n, unet.in_channels, unet.sample_size, unet.sample_size), generator=generator,
                         device=self.pipe.vae.device, dtype=dtype)
        return x * scheduler.init_noise_sigma

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """VAE decode to uint8 (B, H, W, 3)."""
        vae = self.pipe.vae
        x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return ((x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
