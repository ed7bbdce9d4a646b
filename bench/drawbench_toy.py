"""``python -m rlhf.evaluate`` on the toy world: the base and the demo's rounds, every metric available offline.

Two prompt sets: the toy eval prompts (toy captions held out from the training prompts, which the analyser can check) and
DrawBench's 200 prompts. The toy models only draw coloured shapes, so on DrawBench they draw shapes too: those
figures test the harness end to end on DrawBench's categories, not the models. The paper's metrics need models
this machine does not hold (LAION aesthetic weights, HPSv2, BLIP and a sentence model), so they are listed as absent
with the line the command prints.

Throughput: after the images are drawn (and cached), the harness scores every model's images with every metric
(``harness.score_all``); the bare cost is the scoring models' own forward calls on inputs already in their format
(the CLIP image tower on preprocessed pixels, its text tower on tokenised distinct prompts and captions, the reward
heads on features, the analyser on each image). ``scoring_overhead_vs_bare`` is harness time over bare time, the
minimum of several repeats of each, on the same freshly loaded, warmed-up models; the whole benchmark runs on one
torch thread.

    python bench/drawbench_toy.py            # needs data/runs/demo: make demo
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rlhf.evaluate.__main__ import parser as evaluate_parser
from rlhf.evaluate.__main__ import plan
from rlhf.evaluate.harness import Absent, draw_all, run, score_all
from rlhf.evaluate.images import ImageCache
from rlhf.evaluate.metrics import LearnedReward
from rlhf.evaluate.text_alignment import caption
from rlhf.paths import ROOT, RUNS
from rlhf.toy.analyse import analyse

PROMPT_SETS = {"toy_eval": 4, "drawbench": 2}
"""prompt set: seeds per prompt"""
REPEATS = 5


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.inference_mode()
def bare_seconds(ev, images: dict[str, np.ndarray]) -> float:
    """The scoring models' forward calls alone, on every model's images, with inputs prepared beforehand."""
    clip = next(j.clip for j in ev.judges if j.name == "clip_score")
    heads = [j.reward_model for j in ev.judges if isinstance(j, LearnedReward)]
    units = ev.units()[0]
    prompts = list(dict.fromkeys(units))
    prompt_index = [prompts.index(p) for p in units]
    total = 0.0
    for model_images in images.values():
        pixels = torch.stack([clip.preprocess(Image.fromarray(im)) for im in model_images])  # (N, 3, H, W)
        analyses = []
        total += timed(lambda: analyses.extend(analyse(im) for im in model_images))
        tokens = clip.tokenizer(prompts + list(dict.fromkeys(caption(a) for a in analyses)))
        embedded = {}
        total += timed(lambda: embedded.update(
            image=torch.cat([clip.model.encode_image(pixels[i:i + 64]) for i in range(0, len(pixels), 64)]),
            text=torch.cat([clip.model.encode_text(tokens[i:i + 64]) for i in range(0, len(tokens), 64)])))
        for rm in heads:
            features = rm.spec(embedded["image"].numpy(), embedded["text"][prompt_index].numpy())
            total += timed(lambda: rm.ensemble.predict(features))
    return total


def evaluation(prompts: str, seeds: int, run_dir: Path, out: Path):
    args = evaluate_parser().parse_args(["--rounds", str(run_dir), "--prompts", prompts, "--seeds", str(seeds),
                                         "--out", str(out), "--cache", str(RUNS / "eval" / "images")])
    return plan(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUNS / "demo", help="the run folder (default data/runs/demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drawbench_toy.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two threads ran the toy CLIP up to 18x slower here while another job shared the cores
    result = {"run": str(args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run),
              "prompt_sets": {}, "metrics": {}, "per_category": {}, "missing": {}, "throughput": {}}
    for prompts, seeds in PROMPT_SETS.items():
        ev, out, device = evaluation(prompts, seeds, args.run, RUNS / "eval" / f"bench-{prompts}")
        table = run(ev, out, ImageCache(RUNS / "eval" / "images"), device)
        result["models"] = table["models"]
        result["prompt_sets"][prompts] = {"prompts": table["prompts"], "seeds": seeds, "units": table["units"],
                                          "sampler": table["sampler"], "timing": table["timing"]}
        result["metrics"][prompts] = {k: v for k, v in table["metrics"].items() if v["status"] != "absent"}
        result["per_category"][prompts] = table["per_category"]
        result["missing"] |= {k: v["reason"] for k, v in table["metrics"].items() if v["status"] == "absent"}
        if prompts == "drawbench":
            shutil.copy(out / table["grids"]["Colors"], ROOT / "docs" / "drawbench_toy_colors.png")
        images, _ = draw_all(ev, ImageCache(RUNS / "eval" / "images"), device)
        harness, bare = [], []
        for _ in range(REPEATS):
            judges = evaluation(prompts, seeds, args.run, out)[0]  # fresh judges: no text embedded yet
            bare_seconds(judges, images)  # untimed: a newly loaded model's first forwards are slower
            bare.append(bare_seconds(judges, images))
            harness.append(timed(lambda: score_all(judges, images)))
        harness, bare = min(harness), min(bare)
        scored = sum(len(v) for v in images.values())
        result["throughput"][prompts] = {
            "images_scored": scored, "metrics": [j.name for j in ev.judges if not isinstance(j, Absent)],
            "harness_s": round(harness, 3), "bare_s": round(bare, 3),
            "images_scored_per_s": round(scored / harness, 1), "bare_images_per_s": round(scored / bare, 1),
            "scoring_overhead_vs_bare": round(harness / bare, 3)}
        print(f"{prompts}: {scored} images scored in {harness:.2f} s ({scored / harness:.0f}/s); bare forwards "
              f"{bare:.2f} s; overhead {harness / bare:.3f}x")
    result["scoring_overhead_vs_bare"] = max(t["scoring_overhead_vs_bare"] for t in result["throughput"].values())
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
