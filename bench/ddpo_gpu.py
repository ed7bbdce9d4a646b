"""One DDPO epoch of the Stable Diffusion 1.5 architecture (random weights) on one GPU: this engine, trl 0.23.1's
DDPOTrainer and the bare UNet/VAE work of the same epoch, side by side in one run.

    python bench/ddpo_gpu.py           # a CUDA machine with trl 0.23.1 importable; about 4 min on one H100
    python bench/ddpo_gpu.py --tiny    # the same code on the CPU: SD 1.5's blocks, a tenth of the width, 128x128

Random weights of the real architecture time the same kernels as the trained ones (the issue allows it). The
pipeline (UNet 860M parameters, text encoder, VAE, 512x512 images) is built from SD 1.5's published configs and
saved as a diffusers folder that every engine loads by path, as a user's SD 1.5 is loaded. Each engine runs in its
own process (bench/ddpo_vs_trl.py's workers): 1 warm-up epoch, then ``--epochs`` timed epochs, whose median is
reported; fp16 mixed precision with fp32 LoRA weights (r 4, attention projections) in every engine. The epoch:
8 samples x 20 DDIM steps with CFG 5, train batch 4 (2 optimizer steps), one timestep per UNet forward as the
reference and trl do. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed epochs. Writes
bench/results/ddpo_gpu_sd15.json (``--tiny`` prints only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddpo_vs_trl import ROOT, TIMING_SETTING, run_job  # noqa: E402

OUT = ROOT / "bench" / "results" / "ddpo_gpu_sd15.json"
EPOCH = dict(num_steps=20)
SETTING = TIMING_SETTING | dict(timesteps_per_forward=1)
ENGINES = ("ours", "trl", "bare_per_timestep")


def build_sd15(folder: Path, width: float = 1.0, latent_size: int = 64) -> Path:
    """SD 1.5's UNet, VAE and text encoder configs with random weights, saved as a diffusers pipeline folder.

    ``width`` scales every channel count and ``latent_size`` sets the resolution (8 pixels per latent; the CPU
    smoke run takes a tenth of the width at 128x128); the tokenizer is the toy one (any ids below
    the vocabulary size time the same), allowed SD's 77 tokens."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    w = lambda c: max(8, int(c * width) // 8 * 8)  # noqa: E731
    text_dim = w(768)
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=text_dim,
        block_out_channels=tuple(w(c) for c in (320, 640, 1280, 1280)), attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=min(32, w(320) // 4))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=8 * latent_size,
                        block_out_channels=tuple(w(c) for c in (128, 256, 512, 512)),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=min(32, w(128) // 4))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=text_dim, intermediate_size=4 * text_dim, num_hidden_layers=12,
        num_attention_heads=max(1, text_dim // 64), max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=text_dim))
    tokenizer = CLIPTokenizer.from_pretrained(ROOT / "data" / "models" / "toy-sd" / "tokenizer", model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def peak_mib(run: dict) -> float:
    """GPU memory (``max_memory_allocated``) on a GPU, the process's peak RSS on the CPU."""
    return run.get("peak_cuda_mib", run["peak_rss_kib"] / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run at a tenth of the width; prints only")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per engine, after 1 warm-up")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.tiny:
        sys.exit("no CUDA device: this benchmark times SD 1.5 on a GPU; --tiny runs its code on the CPU")
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="sd15-random-") as folder:
        build_sd15(Path(folder), *((0.1, 16) if args.tiny else (1.0, 64)))
        log(f"built the SD 1.5 architecture with random weights in {folder}")
        runs = {}
        for engine in ENGINES:
            runs[engine] = run_job(dict(kind="timing", engine=engine, setting=SETTING, reward="taste:red", warmup=1,
                                        epochs=args.epochs, pipeline=folder, epoch=EPOCH,
                                        mixed_precision="no" if args.tiny else "fp16"))
            log(f"{engine:<18} epochs {[round(t, 2) for t in runs[engine]['epoch_s']]} s, "
                f"peak memory {peak_mib(runs[engine]):.0f} MiB")
    med = {e: statistics.median(r["epoch_s"]) for e, r in runs.items()}
    peak = {e: peak_mib(r) for e, r in runs.items()}
    result = {
        "what": "one DDPO epoch of the SD 1.5 architecture (random weights, 512x512, fp16 autocast, fp32 LoRA r4) "
                "on one GPU; see bench/ddpo_gpu.py",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {m.__name__: m.__version__ for m in (torch, __import__("diffusers"), __import__("transformers"),
                                                         __import__("peft"), __import__("accelerate"))},
        "epoch_shape": {"samples": 8, "train_batch_size": 4, "guidance_scale": 5.0, **EPOCH},
        "repeats": args.epochs, "repeats_are": "timed epochs in one process per engine, after 1 warm-up epoch",
        "median_epoch_s": {e: round(v, 3) for e, v in med.items()},
        "epoch_s_raw": {e: [round(t, 3) for t in r["epoch_s"]] for e, r in runs.items()},
        "load_s": {e: round(r["load_s"], 1) for e, r in runs.items()},
        "peak_mem_mib": {e: round(v) for e, v in peak.items()},
        "epoch_time_ratio": round(med["ours"] / med["trl"], 3),
        "overhead_vs_bare_unet": round(med["ours"] / med["bare_per_timestep"], 3),
        "trl_overhead_vs_bare_unet": round(med["trl"] / med["bare_per_timestep"], 3),
        "peak_mem_ratio": round(peak["ours"] / peak["trl"], 3),
        "benchmark_wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=1))
    if not args.tiny:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
