"""Distil the toy Stable Diffusion pipeline into a toy latent consistency model (Luo et al. 2023, arXiv 2310.04378).

The student is the toy SD UNet with one addition, a guidance embedding (``time_cond_proj_dim``), so that one
forward pass does what the teacher needs two for: classifier-free guidance at a scale w sampled per image.
It learns to map any point of the teacher's guided probability-flow ODE straight to that trajectory's clean
latent, by agreeing with an EMA copy of itself one skipping-step DDIM jump further down the same trajectory;
that is what lets it sample in 4 steps where the teacher takes 20.

Saved as a diffusers ``LatentConsistencyModelPipeline`` folder whose VAE, text encoder and tokenizer are
symlinks to the toy SD's, so they are shipped once: ``python -m rlhf.toy.train lcm`` trains it, and
``python -m rlhf.toy.train_lcm quality`` measures its prompt following against the toy SD's.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, LatentConsistencyModelPipeline, LCMScheduler,
                       UNet2DConditionModel)
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from rlhf.paths import ROOT, TOY_LCM, TOY_PIPELINE
from rlhf.toy.train_pipeline import SCHEDULER_CONFIG, encode_latents, to_pixels, warmup_cosine
from rlhf.toy.world import dataset

SHARED = ("vae", "text_encoder", "tokenizer")
"""components the LCM takes unchanged from the teacher, linked rather than copied"""


@dataclass
class LCMTrainConfig:
    seed: int = 0
    images: int = 20_000
    """distinct captioned drawings whose latents start the teacher's trajectories"""
    steps: int = 1000
    batch: int = 32
    lr: float = 2e-4
    warmup_steps: int = 100
    ddim_steps: int = 50
    """teacher solver grid: a skipping step of k = 1000 / 50 = 20 timesteps, the paper's best k"""
    w_min: float = 2.0
    w_max: float = 8.0
    """range of the guidance w in the LCM paper's form, eps_c + w (eps_c - eps_u): w + 1 in the pipeline's
    ``guidance_scale``, so 3 to 9, which holds both the toy SD's usual 5 and the LCM pipeline's default 8.5"""
    guidance_dim: int = 64
    """width of the sinusoidal guidance embedding fed to the UNet's time embedding"""
    ema_decay: float = 0.95
    """of the target network, as in the paper: it moves fast, as the online network's teacher should"""
    huber_c: float = 1e-3
    timestep_scaling: float = 10.0
    """LCMScheduler's default: c_skip is 1 at t = 0 and below 1e-4 from t = 20 on"""

    def __post_init__(self) -> None:
        if 1000 % self.ddim_steps:
            raise ValueError(f"ddim_steps={self.ddim_steps} must divide the 1000 training timesteps")


def boundary_scalings(t: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = 0.5):
    """c_skip and c_out of the consistency function f(x, t) = c_skip x + c_out x0_pred: c_skip(0) = 1 and
    c_out(0) = 0 make f the identity at t = 0, the boundary condition no training has to learn."""
    scaled = t.float() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of 1000 w, the convention ``LatentConsistencyModelPipeline`` samples with."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    args = 1000.0 * w.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def student_from_teacher(teacher: UNet2DConditionModel, guidance_dim: int) -> UNet2DConditionModel:
    """The teacher's architecture and weights plus a zero-initialised guidance projection, so that the student
    starts as the unguided teacher and learns what guidance adds."""
    student = UNet2DConditionModel.from_config({**teacher.config, "time_cond_proj_dim": guidance_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(f"student does not extend the teacher: missing {missing}, unexpected {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


class Distiller:
    """One consistency-distillation loss at a time; the teacher and the EMA target never get gradients."""

    def __init__(self, teacher: UNet2DConditionModel, cfg: LCMTrainConfig, prediction_type: str):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"teacher predicts {prediction_type!r}; distillation handles epsilon and v_prediction")
        self.cfg, self.prediction_type = cfg, prediction_type
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student_from_teacher(teacher, cfg.guidance_dim).train()
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        acp = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod
        self.alpha, self.sigma = acp.sqrt(), (1 - acp).sqrt()
        self.k = 1000 // cfg.ddim_steps

    def _at(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t].view(-1, 1, 1, 1)

    def x0_and_eps(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor):
        """The clean latent and the noise a UNet output implies at x_t."""
        a, s = self._at(self.alpha, t), self._at(self.sigma, t)
        if self.prediction_type == "v_prediction":
            return a * x - s * out, s * x + a * out
        return (x - s * out) / a, out

    def consistency(self, unet, x, t, states, w_emb) -> torch.Tensor:
        c_skip, c_out = boundary_scalings(t, self.cfg.timestep_scaling)
        x0, _ = self.x0_and_eps(unet(x, t, states, timestep_cond=w_emb).sample, x, t)
        return c_skip * x + c_out * x0

    def loss(self, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg, n = self.cfg, len(z0)
        index = torch.randint(0, cfg.ddim_steps, (n,), generator=gen)
        t_start = (index + 1) * self.k - 1  # the solver grid 19, 39, ..., 999
        t_end = (t_start - self.k).clamp(min=0)
        noise = torch.randn(z0.shape, generator=gen)
        x_start = self._at(self.alpha, t_start) * z0 + self._at(self.sigma, t_start) * noise
        w = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(n, generator=gen)
        w_emb = guidance_embedding(w, cfg.guidance_dim)
        pred = self.consistency(self.student, x_start, t_start, cond, w_emb)
        with torch.no_grad():
            out_c, out_u = self.teacher(torch.cat([x_start] * 2), torch.cat([t_start] * 2),
                                        torch.cat([cond, uncond])).sample.chunk(2)
            x0, eps = self.x0_and_eps(out_c + w.view(-1, 1, 1, 1) * (out_c - out_u), x_start, t_start)
            x_end = self._at(self.alpha, t_end) * x0 + self._at(self.sigma, t_end) * eps  # one DDIM jump of k
            target = self.consistency(self.target, x_end, t_end, cond, w_emb)
        return (torch.sqrt((pred - target) ** 2 + cfg.huber_c**2) - cfg.huber_c).mean()

    @torch.no_grad()
    def update_target(self) -> None:
        for tgt, src in zip(self.target.parameters(), self.student.parameters()):
            tgt.lerp_(src, 1 - self.cfg.ema_decay)


def load_teacher(folder: Path = TOY_PIPELINE) -> dict:
    """The toy SD's parts, frozen, in float32."""
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"no toy SD pipeline at {folder}: run `python -m rlhf.toy.train pipeline` first")
    parts = dict(unet=UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32),
                 vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32),
                 text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
                 tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"))
    for name in ("unet", "vae", "text_encoder"):
        parts[name].eval().requires_grad_(False)
    parts["prediction_type"] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
    return parts


def save_lcm(out_dir: Path, student: UNet2DConditionModel, teacher_dir: Path, cfg: LCMTrainConfig,
             prediction_type: str) -> None:
    """The student UNet (fp16: it is the one new part) and an LCMScheduler, next to relative symlinks to the
    teacher's other parts. ``from_pretrained`` upcasts the UNet when asked for float32."""
    scheduler = LCMScheduler.from_config(SCHEDULER_CONFIG, prediction_type=prediction_type,
                                         original_inference_steps=cfg.ddim_steps,
                                         timestep_scaling=cfg.timestep_scaling)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link = out_dir / name
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise FileExistsError(f"{link} is a real folder; the LCM links its {name} to the teacher's")
            link.unlink()
        link.symlink_to(os.path.relpath(teacher_dir / name, out_dir), target_is_directory=True)
    pipe = LatentConsistencyModelPipeline(
        vae=AutoencoderKL.from_pretrained(out_dir / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(out_dir / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(out_dir / "tokenizer"),
        unet=student, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_config(out_dir)  # model_index.json only: the shared parts stay links
    copy.deepcopy(student).half().save_pretrained(out_dir / "unet")
    scheduler.save_pretrained(out_dir / "scheduler")


def train_lcm(out_dir: Path, cfg: LCMTrainConfig = LCMTrainConfig(), teacher_dir: Path = TOY_PIPELINE) -> dict:
    """Distil the toy SD at ``teacher_dir`` and save the LCM to ``out_dir``; returns a summary."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = load_teacher(teacher_dir)
    distiller = Distiller(parts["unet"], cfg, parts["prediction_type"])
    drawings = dataset(cfg.images, seed=cfg.seed)
    mean, std = encode_latents(parts["vae"], to_pixels([d.image for d in drawings]))
    scale = parts["vae"].config.scaling_factor
    captions = [d.scene.caption() for d in drawings]
    distinct = sorted(set(captions)) + [""]  # "" last: the teacher's unconditional branch
    row = {c: i for i, c in enumerate(distinct)}
    which = torch.tensor([row[c] for c in captions])
    with torch.no_grad():  # the text encoder is frozen: each distinct caption is encoded once
        ids = parts["tokenizer"](distinct, padding="max_length", truncation=True,
                                 max_length=parts["tokenizer"].model_max_length, return_tensors="pt").input_ids
        states = parts["text_encoder"](ids)[0]
    params = list(distiller.student.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.steps))
    first, ema = None, None
    for _ in (bar := tqdm(range(cfg.steps), desc="lcm")):
        idx = torch.randint(len(mean), (cfg.batch,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        loss = distiller.loss(z0, states[which[idx]], states[-1:].expand(cfg.batch, -1, -1), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        distiller.update_target()
        ema = loss.item() if ema is None else 0.99 * ema + 0.01 * loss.item()
        first = ema if first is None else first
        bar.set_postfix(loss=f"{ema:.4f}")
    save_lcm(out_dir, distiller.student, teacher_dir, cfg, parts["prediction_type"])
    return {"first_loss": first, "final_loss": ema, "config": asdict(cfg)}


def quality(lcm_dir: Path = TOY_LCM, sd_dir: Path = TOY_PIPELINE, lcm_steps: int = 4, guidance: float = 5.0) -> dict:
    """``rlhf.toy.quality``'s prompt following and placement for the LCM; the undistilled student (the teacher's
    UNet in the LCM sampler, guidance projection zero), which tells what the distillation itself adds; the toy SD
    at its usual 20 DDIM steps and cut to the LCM's step count. Each with the seconds its sampling took."""
    from rlhf.models import load_pipeline
    from rlhf.toy.quality import pipeline_quality, position_response

    teacher = load_teacher(sd_dir)
    cfg = LCMTrainConfig(guidance_dim=json.loads((lcm_dir / "unet" / "config.json").read_text())["time_cond_proj_dim"])
    result = {}
    with tempfile.TemporaryDirectory() as undistilled:
        save_lcm(Path(undistilled), student_from_teacher(teacher["unet"], cfg.guidance_dim), sd_dir, cfg,
                 teacher["prediction_type"])
        runs = {"lcm": (lcm_dir, lcm_steps), "undistilled": (Path(undistilled), lcm_steps), "sd": (sd_dir, 20),
                f"sd_{lcm_steps}_steps": (sd_dir, lcm_steps)}
        for name, (folder, steps) in runs.items():
            pipe = load_pipeline(folder)
            t0 = time.time()
            figures, _, _ = pipeline_quality(pipe, steps=steps, guidance=guidance)
            seconds = time.time() - t0
            result[name] = figures | {"sampling_seconds": round(seconds, 1),
                                      "position_response": position_response(pipe, steps=steps, guidance=guidance)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.toy.train_lcm", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("quality",), help="quality: measure the shipped LCM against the toy SD")
    parser.add_argument("--steps", type=int, default=4, help="LCM steps per image (default 4), e.g. --steps 2")
    parser.add_argument("--guidance", type=float, default=5.0,
                        help="guidance scale, embedded for the LCM, classifier-free for the SD (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "toy_lcm.json",
                        help="where the figures go (default bench/results/toy_lcm.json)")
    args = parser.parse_args(argv)
    result = quality(lcm_steps=args.steps, guidance=args.guidance)
    summary = TOY_LCM / "training_summary.json"
    if summary.is_file():
        result["training"] = json.loads(summary.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = list(result["lcm"]["following"])
    print(f"{'':<16}" + "".join(f"{k:>11}" for k in keys) + f"{'seconds':>9}")
    for name in ("lcm", "undistilled", "sd", f"sd_{args.steps}_steps"):
        r = result[name]
        print(f"{name:<16}" + "".join(f"{r['following'][k]:>11.1%}" for k in keys) + f"{r['sampling_seconds']:>9}")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
