"""Train the toy Stable Diffusion pipeline from scratch: a tiny VAE, then the UNet on a frozen text encoder.

Same component classes as SD 1.5 (CLIPTokenizer, CLIPTextModel, UNet2DConditionModel, AutoencoderKL,
DDIMScheduler), only smaller: 32x32 images, 16x16x4 latents. As in SD 1.5 the text encoder is a CLIP text
tower, frozen: the toy CLIP's (train it first). Saved with ``save_pretrained`` so that
``StableDiffusionPipeline.from_pretrained(folder)`` loads it exactly as it loads SD 1.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rlhf.paths import TOY_CLIP
from rlhf.toy.clip_text import clip_text_encoder
from rlhf.toy.tokenizer import build_clip_tokenizer
from rlhf.toy.world import IMAGE_SIZE, dataset


@dataclass
class PipelineTrainConfig:
    seed: int = 0
    images: int = 40_000
    """distinct captioned drawings in the training set"""
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-5
    """small, as in SD's VAE: enough to keep latents bounded, not enough to blur"""
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    """share of empty captions, which teaches the unconditional branch for classifier-free guidance"""
    max_length: int = 32
    """tokens per prompt (SD 1.5: 77); toy captions need about 12"""
    prediction_type: str = "v_prediction"
    """what the UNet predicts (SD 1.5: epsilon; SD 2: v_prediction). The epsilon loss weighs an error in the
    predicted image by the signal-to-noise ratio, about 0.005 at the noisiest steps where a shape's place is
    decided; the v loss weighs it about 1 there, so a v-trained UNet learns where a caption puts a shape
    (docs/results/toy_quality.md)"""

    def __post_init__(self) -> None:  # before the drawings and the VAE cost minutes
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type={self.prediction_type!r}; use 'epsilon' or 'v_prediction'")


SCHEDULER_CONFIG = dict(  # SD 1.5's noise schedule
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def build_models(cfg: PipelineTrainConfig, clip_dir: Path = TOY_CLIP) -> dict:
    import open_clip

    if not (clip_dir / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no toy CLIP at {clip_dir}: run `python -m rlhf.toy.train clip` first")
    text_encoder = clip_text_encoder(open_clip.create_model(f"local-dir:{clip_dir}"))
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # attention only at 8x8: self-attention over 16x16 = 256 tokens would cost 2.4x the step time
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),  # flat colours need little: 4.8x faster than (32, 64) with attention
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        mid_block_add_attention=False,
        sample_size=IMAGE_SIZE,
    )
    return dict(text_encoder=text_encoder, unet=unet, vae=vae, tokenizer=build_clip_tokenizer(cfg.max_length))


def warmup_cosine(warmup_steps: int, steps: int):
    """Learning-rate factor: linear warm-up, then cosine decay to zero at ``steps``."""
    return lambda s: min(1.0, (s + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))


def train_vae(vae: AutoencoderKL, pixels: torch.Tensor, cfg: PipelineTrainConfig, gen: torch.Generator) -> float:
    """Reconstruction MSE + a tiny KL; returns the final MSE (pixels in [-1, 1])."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.vae_steps))
    ema = None
    for _ in (bar := tqdm(range(cfg.vae_steps), desc="vae")):
        x = pixels[torch.randint(len(pixels), (cfg.vae_batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        mse = F.mse_loss(vae.decode(z).sample, x)
        loss = mse + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = mse.item() if ema is None else 0.98 * ema + 0.02 * mse.item()
        bar.set_postfix(mse=f"{ema:.4f}")
    return ema


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every training image, computed once."""
    means, stds = [], []
    for i in range(0, len(pixels), batch):
        post = vae.encode(pixels[i : i + batch]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(models: dict, latents: tuple[torch.Tensor, torch.Tensor], captions: list[str],
               cfg: PipelineTrainConfig, gen: torch.Generator) -> float:
    """Standard diffusion loss (epsilon or v target) on the frozen text encoder's states. Returns the final loss."""
    unet, tokenizer = models["unet"], models["tokenizer"]
    scale = models["vae"].config.scaling_factor
    noise_sched = DDPMScheduler.from_config(SCHEDULER_CONFIG, prediction_type=cfg.prediction_type)
    distinct = sorted(set(captions)) + [""]  # "" last: the unconditional branch for classifier-free guidance
    row = {c: i for i, c in enumerate(distinct)}
    which = torch.tensor([row[c] for c in captions])
    with torch.no_grad():  # frozen, so each distinct caption is encoded once
        ids = tokenizer(distinct, padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="pt").input_ids
        states = models["text_encoder"](ids)[0]
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.unet_steps))
    mean, std = latents
    ema = None
    for _ in (bar := tqdm(range(cfg.unet_steps), desc="unet")):
        idx = torch.randint(len(mean), (cfg.unet_batch,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale  # (B, 4, 16, 16)
        cond = which[idx].clone()
        cond[torch.rand(len(idx), generator=gen) < cfg.caption_dropout] = len(distinct) - 1
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        target = noise if cfg.prediction_type == "epsilon" else noise_sched.get_velocity(z0, noise, t)
        pred = unet(zt, t, encoder_hidden_states=states[cond]).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.99 * ema + 0.01 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
    return ema


def train_pipeline(out_dir: Path, cfg: PipelineTrainConfig = PipelineTrainConfig()) -> dict:
    """Train every component from scratch and save the pipeline to ``out_dir``; returns a summary."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    drawings = dataset(cfg.images, seed=cfg.seed)
    pixels = to_pixels([d.image for d in drawings])
    models = build_models(cfg)
    vae_mse = train_vae(models["vae"], pixels, cfg, gen)
    models["vae"].eval().requires_grad_(False)
    latents = encode_latents(models["vae"], pixels)
    scaling = float(1 / latents[0].std())  # SD's convention: unit-variance latents
    models["vae"].register_to_config(scaling_factor=scaling)
    unet_loss = train_unet(models, latents, [d.scene.caption() for d in drawings], cfg, gen)
    pipe = StableDiffusionPipeline(
        **models,
        scheduler=DDIMScheduler.from_config(SCHEDULER_CONFIG, prediction_type=cfg.prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    # The text tower holds the toy CLIP's weights, which are fp16 values: in fp16 they are stored exactly, at half
    # the size, and from_pretrained still loads them as float32.
    weights = out_dir / "text_encoder" / "model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    return {"vae_mse": vae_mse, "vae_scaling_factor": scaling, "unet_loss": unet_loss}
