"""Choose the toy preset by measurement: DDPO settings on the shipped toy pipeline at an equal sample budget.

    python bench/ddpo_toy_sweep.py [--samples 768] [--reward taste:centred] [--only SUBSTRING]

Each setting trains from the same base on the same number of sampled trajectories; the gain is the mean reward
on held-out noise (16 samples of each of the 16 training prompts, seeds never used in training) after training
minus before. Writes bench/results/ddpo_toy_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlhf.ddpo.config import PRESETS
from rlhf.ddpo.rewards import make_reward
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.models import load_pipeline
from rlhf.prompts import load_prompts

SMALL = dict(sample_batch_size=16, samples_per_prompt=4, train_batch_size=4)
SETTINGS = {
    "LoRA r4, lr 3e-4, clip 1e-4 (the reference's), 16 samples/epoch": SMALL | dict(learning_rate=3e-4, clip_range=1e-4),
    "LoRA r4, lr 1e-2, clip 1e-2, 16 samples/epoch": SMALL | dict(learning_rate=1e-2, clip_range=1e-2),
    "full fine-tuning, lr 1e-4, clip 1e-2, 16 samples/epoch": SMALL | dict(use_lora=False, learning_rate=1e-4, clip_range=1e-2),
    "toy preset: LoRA r4, lr 3e-3, clip 1e-2, 64 samples/epoch": {},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=768, help="trajectories each setting trains on")
    parser.add_argument("--reward", default="taste:centred")
    parser.add_argument("--only", default="", help="run only the settings whose name contains this")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_toy_sweep.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    results = {}
    for name, changes in SETTINGS.items():
        if args.only not in name:
            continue
        cfg = PRESETS["toy"].replace(prompts=prompts, **changes)
        epochs = args.samples // cfg.sample_batch_size
        trainer = DDPOTrainer(load_pipeline(), make_reward(args.reward), cfg, Path("/tmp/ddpo-sweep") / str(time.time()))
        before = trainer.evaluate(prompts, samples_per_prompt=16)
        t0 = time.perf_counter()
        trainer.train(epochs, progress=False)
        seconds = time.perf_counter() - t0
        after = trainer.evaluate(prompts, samples_per_prompt=16)
        results[name] = {"epochs": epochs, "before": before, "after": after, "gain": after - before, "seconds": round(seconds, 1)}
        print(f"{name:<60} {before:.4f} -> {after:.4f} (gain {after - before:+.4f}) in {seconds:.0f} s", flush=True)
    previous = json.loads(args.out.read_text())["settings"] if args.out.is_file() and args.only else {}
    args.out.write_text(json.dumps({"reward": args.reward, "samples": args.samples, "settings": previous | results}, indent=2))


if __name__ == "__main__":
    main()
