"""Measure the shipped toy models: ``python -m rlhf.toy.quality``.

Pipeline: the analyser's prompt-following rates on the 200 ``toy_eval`` prompts x fixed seeds, against a
chance baseline (the same images judged against shuffled prompts), how far a named place moves the shape, and a
sample grid. CLIP: zero-shot caption retrieval on held-out drawings, and how much of a lone shape's position a
linear probe reads from the image embedding (a reward model for placement can do no better). Figures go to
``bench/results/toy_quality.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf.grid import image_grid
from rlhf.models import load_clip, load_pipeline
from rlhf.paths import ROOT, TOY_CLIP
from rlhf.prompts import load_prompts
from rlhf.toy.analyse import Analysis, analyse, follows
from rlhf.toy.world import POSITIONS, Scene, dataset, parse_caption


def sample(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch: int = 50) -> list[np.ndarray]:
    """One uint8 image per (prompt, seed), prompt-major, through the pipeline's own ``__call__``."""
    jobs = [(p, s) for p in prompts for s in seeds]
    images = []
    for i in tqdm(range(0, len(jobs), batch), desc="sampling"):
        chunk = jobs[i : i + batch]
        gens = [torch.Generator().manual_seed(s) for _, s in chunk]
        out = pipe([p for p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np")
        images += list((out.images * 255).round().astype(np.uint8))
    return images


def following_rates(analyses: list[Analysis], scenes: list[Scene]) -> dict[str, float]:
    """Share of analysed images showing each asked attribute, and the share showing all of them."""
    hits: dict[str, list[bool]] = {}
    every = []
    for a, asked in zip(analyses, scenes):
        f = follows(a, asked)
        every.append(all(f.values()))
        for k, v in f.items():
            hits.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"all": float(np.mean(every))}


def stripe_shares(analyses: list[Analysis]) -> dict[str, float]:
    """How often samples come out striped (strength over 0.125, half the drawings' least) and how strongly: the
    drawings are striped half the time at a mean strength of 0.625, whatever the caption."""
    strength = np.array([a.stripes for a in analyses])
    striped = strength > 0.125
    return {"striped_share": float(striped.mean()),
            "mean_strength_when_striped": float(strength[striped].mean()) if striped.any() else 0.0}


def pipeline_quality(pipe, prompt_set: str = "toy_eval", seeds=(0, 1), steps: int = 20, guidance: float = 5.0):
    prompts = [p.text for p in load_prompts(prompt_set)]
    images = sample(pipe, prompts, list(seeds), steps, guidance)
    analyses = [analyse(im) for im in images]  # once: following, chance and stripes all read them
    scenes = [parse_caption(p) for p in prompts for _ in seeds]
    shuffled = [scenes[i] for i in np.random.default_rng(0).permutation(len(scenes))]
    result = {
        "prompts": len(prompts), "seeds": list(seeds), "steps": steps, "guidance": guidance,
        "following": following_rates(analyses, scenes),
        "chance": following_rates(analyses, shuffled),
        "stripes": stripe_shares(analyses),
    }
    return result, images, [p for p in prompts for _ in seeds]


def position_response(pipe, seeds=tuple(range(8)), steps: int = 20, guidance: float = 5.0) -> dict:
    """Mean centroid of the main shape for each named place, on the same seeds for every place.

    The drawings put "on the left" 15 pixels left of "on the right"; a pipeline that cannot tell the places
    apart leaves each shape where its starting noise put it, so every place gets the same mean.
    """
    looks = [("circle", "red", "white", "small"), ("square", "blue", "yellow", "large"),
             ("triangle", "green", "black", "small"), ("square", "purple", "gray", "small")]
    places = [*POSITIONS, None]
    prompts = [Scene(*look, 1, place).caption() for place in places for look in looks]
    images = sample(pipe, prompts, list(seeds), steps, guidance)
    per_place = len(looks) * len(seeds)
    centroid = {}
    for k, place in enumerate(places):
        mains = [analyse(im).main for im in images[k * per_place : (k + 1) * per_place]]
        centroid[place or "unnamed"] = [round(float(np.mean([getattr(b, axis) for b in mains if b is not None])), 2)
                                        for axis in ("x", "y")]
    return {"images_per_place": per_place, "mean_centroid": centroid,
            "left_right_gap_px": round(centroid["right"][0] - centroid["left"][0], 2),
            "top_bottom_gap_px": round(centroid["bottom"][1] - centroid["top"][1], 2),
            "drawings_gap_px": POSITIONS["right"][0] - POSITIONS["left"][0]}


def clip_quality(source=TOY_CLIP, n: int = 1000) -> dict[str, float]:
    from sklearn.linear_model import RidgeCV

    from rlhf.toy.train_clip import retrieval_accuracy

    clip = load_clip(source)
    held_out = dataset(n, seed=10_000)
    result = retrieval_accuracy(clip.model, clip.tokenizer, held_out)
    lone = [d for d in held_out if d.scene.count == 1]
    emb, xy = clip.embed_images([d.image for d in lone]).numpy(), np.array([d.centres[0] for d in lone])
    fit = len(lone) * 2 // 3
    probe = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(emb[:fit], xy[:fit])
    return result | {"position_probe_r2": round(float(probe.score(emb[fit:], xy[fit:])), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.toy.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance (default 5), e.g. --guidance 3")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per image (default 20), e.g. --steps 10")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "toy_samples.png", help="where the sample grid goes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "toy_quality.json",
                        help="where the figures go (default bench/results/toy_quality.json)")
    args = parser.parse_args(argv)
    t0 = time.time()
    pipe = load_pipeline()
    pipe_q, images, captions = pipeline_quality(pipe, steps=args.steps, guidance=args.guidance)
    placement = position_response(pipe, steps=args.steps, guidance=args.guidance)
    result = {"pipeline": pipe_q, "position_response": placement, "clip": clip_quality(), "seconds": round(time.time() - t0, 1)}
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images[:32:2], captions[:32:2], cols=4).save(args.grid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'attribute':<12}{'follows':>9}{'chance':>9}")
    for k, v in pipe_q["following"].items():
        print(f"{k:<12}{v:>9.1%}{pipe_q['chance'][k]:>9.1%}")
    print(f"mean centroid of 'on the left' vs 'on the right': {placement['left_right_gap_px']:+.2f} px apart "
          f"(drawings: {placement['drawings_gap_px']:+.1f}); 'at the top' vs 'at the bottom': {placement['top_bottom_gap_px']:+.2f} px")
    print(f"striped samples: {pipe_q['stripes']['striped_share']:.1%} (drawings: 50%), mean strength "
          f"{pipe_q['stripes']['mean_strength_when_striped']:.2f} (drawings: 0.62)")
    print(f"CLIP zero-shot caption top-1 over {result['clip']['captions']} captions: {result['clip']['caption_top1']:.1%}")
    print(f"grid: {args.grid}\nfigures: {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
