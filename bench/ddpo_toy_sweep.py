"""Choose the toy preset by measurement: a small sweep of DDPO settings on the shipped toy pipeline.

    python bench/ddpo_toy_sweep.py [--epochs 15] [--reward taste:large_warm]

Each setting trains from the same base for the same number of epochs; the gain is the mean reward on held-out
noise (seeds never used in training) after training minus before. Writes bench/results/ddpo_toy_sweep.json.
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

SETTINGS = {
    "lora r4, lr 3e-4, clip 1e-4 (reference)": dict(learning_rate=3e-4, clip_range=1e-4),
    "lora r4, lr 3e-3, clip 1e-3": dict(learning_rate=3e-3, clip_range=1e-3),
    "lora r16, lr 3e-3, clip 1e-3": dict(learning_rate=3e-3, clip_range=1e-3, lora_rank=16),
    "full, lr 1e-4, clip 1e-3": dict(use_lora=False, learning_rate=1e-4, clip_range=1e-3),
    "lora r4, lr 1e-2, clip 1e-2, 4 steps/epoch": dict(learning_rate=1e-2, clip_range=1e-2, train_batch_size=4),
    "lora r4, lr 3e-3, clip 1e-3, 4 steps/epoch": dict(learning_rate=3e-3, clip_range=1e-3, train_batch_size=4),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--reward", default="taste:large_warm")
    parser.add_argument("--only", default="", help="run only the settings whose name contains this")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_toy_sweep.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    results = {}
    for name, changes in SETTINGS.items():
        if args.only not in name:
            continue
        cfg = PRESETS["toy"].replace(prompts=prompts, **changes)
        trainer = DDPOTrainer(load_pipeline(), make_reward(args.reward), cfg, Path("/tmp/ddpo-sweep") / str(time.time()))
        before = trainer.evaluate(prompts)
        t0 = time.perf_counter()
        trainer.train(args.epochs, progress=False)
        seconds = time.perf_counter() - t0
        after = trainer.evaluate(prompts)
        results[name] = {"before": before, "after": after, "gain": after - before, "seconds": round(seconds, 1)}
        print(f"{name:<42} {before:.4f} -> {after:.4f} (gain {after - before:+.4f}) in {seconds:.0f} s", flush=True)
    previous = json.loads(args.out.read_text())["settings"] if args.out.is_file() and args.only else {}
    args.out.write_text(json.dumps({"reward": args.reward, "epochs": args.epochs, "settings": previous | results}, indent=2))


if __name__ == "__main__":
    main()
