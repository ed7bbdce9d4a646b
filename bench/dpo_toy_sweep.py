"""Choose the direct methods' toy presets by measurement: Diffusion-DPO and D3PO on one round's labels.

    python bench/dpo_toy_sweep.py [--steps 100] [--only TEXT,TEXT]    # results of other settings are kept

One toy round (the demo's round 1: 16 toy_train prompts x 8 seeds drawn by the base, 400 pairs, labeller
synthetic:striped) is run up to its training phase with method d3po, so its images carry their trajectories. Each
setting then trains from the base on the same pairs (audit pairs left out, ties unused) for the same number of
steps; its gain is the hidden striped score on the round's held-out evaluation seeds (16 per training prompt, never
labelled) after training minus the base's, with the paired standard error. Merges into
bench/results/dpo_toy_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from rlhf.dpo.config import METHOD_PRESETS
from rlhf.dpo.d3po import D3POTrainer, require_trajectories
from rlhf.dpo.trainer import DiffusionDPOTrainer
from rlhf.evaluate.images import draw
from rlhf.models import load_pipeline
from rlhf.round import evaluate
from rlhf.round.config import load_config
from rlhf.round.loop import Loop

SETTINGS = {
    "diffusion_dpo": [dict(learning_rate=lr) for lr in (3e-4, 1e-3, 3e-3, 1e-2)] + [dict(learning_rate=1e-3, beta=1000.0)],
    "d3po": [dict(learning_rate=lr) for lr in (3e-4, 3e-3, 1e-2)] + [dict(learning_rate=1e-2, timestep_fraction=0.2)],
}


def hidden_scores(pipe, unet, cfg, eval_set) -> np.ndarray:
    prompts, seeds = eval_set.jobs()
    sampler = cfg.ddpo_config()
    images = draw(pipe, unet, prompts, seeds, num_steps=sampler.num_steps, eta=sampler.eta,
                  guidance_scale=sampler.guidance_scale)
    return evaluate.TASTES["striped"].score(list(images), prompts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per setting")
    parser.add_argument("--only", default="", help="run only the settings whose name contains one of these "
                                                   "comma-separated texts")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dpo_toy_sweep.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpo-sweep-"))
    loop = Loop(work / "runs", load_config("toy", overrides=["labeller=synthetic:striped", "method=d3po"]))
    while loop.current() is None or loop.current().phase != "train":
        loop.step()
    cfg = loop.stored_config(loop.current())
    eval_set = loop.eval_sets(cfg)[0]
    pairs = loop.direct_pairs(1, cfg)
    chains = require_trajectories(pairs)
    base_pipe = load_pipeline()
    base = hidden_scores(base_pipe, base_pipe.unet, cfg, eval_set)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = {"pairs": len(pairs), "eval_images": len(base), "base_hidden": float(base.mean()),
               "settings": previous.get("settings", {})}
    for method, changes in SETTINGS.items():
        for change in changes:
            name = f"{method} " + ", ".join(f"{k}={v}" for k, v in change.items()) + f", {args.steps} steps"
            if not any(part in name for part in args.only.split(",")):
                continue
            direct = METHOD_PRESETS[method]["toy"].replace(**change, save_every=0)
            t0 = time.perf_counter()
            trainer_class = D3POTrainer if method == "d3po" else DiffusionDPOTrainer
            trainer = trainer_class(load_pipeline(), direct, work / name.replace(" ", "_"))
            history = trainer.train(chains if method == "d3po" else pairs, args.steps)
            minutes = (time.perf_counter() - t0) / 60
            trainer.unet.eval()
            scores = hidden_scores(trainer.pipe, trainer.unet, cfg, eval_set)
            gain = evaluate.paired_change(scores, base)
            results["settings"][name] = {"method": method, **change, "steps": args.steps, "hidden_gain": gain["mean"], "se": gain["se"],
                                         "train_minutes": round(minutes, 2),
                                         "implicit_acc_last10": round(float(np.mean([h["dpo/implicit_acc"] for h in history[-10:]])), 3)}
            print(name, results["settings"][name], flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
