"""Does the predicted-x_0 state baseline (``x0_baseline``) buy reward? The toy preset with and without it.

    python bench/ddpo_baseline_ab.py [--rewards jpeg_incompressibility:1,2;taste:striped:1,2] [--epochs 10]   # 11 min

For each reward and training seed, the toy preset trains from the base model with and without the baseline
(the same prompts and start noise in both arms until their weights part) and is scored against that reward on
held-out noise (8 samples of each of the 16 training prompts, a seed never used in training) after half and
all of the epochs. Writes bench/results/ddpo_baseline_ab.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from rlhf.ddpo.config import PRESETS
from rlhf.ddpo.rewards import make_reward
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.models import load_pipeline
from rlhf.prompts import load_prompts


def run(reward_name: str, seed: int, x0: bool, epochs: int, prompts: list[str], base: float | None) -> dict:
    cfg = PRESETS["toy"].replace(prompts=prompts, seed=seed, x0_baseline=x0)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = DDPOTrainer(load_pipeline(), make_reward(reward_name), cfg, run_dir)
        before = base if base is not None else trainer.evaluate(prompts, samples_per_prompt=8)  # LoRA starts at zero
        gains, t0 = [], time.perf_counter()
        for part in (epochs // 2, epochs - epochs // 2):
            trainer.train(part, progress=False)
            gains.append(round(trainer.evaluate(prompts, samples_per_prompt=8) - before, 4))
        seconds = time.perf_counter() - t0
    return {"before": before, "gain_half": gains[0], "gain": gains[1], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", default="jpeg_incompressibility:1,2;taste:striped:1,2",
                        help="reward:seed,seed;... (the seeds are training seeds)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_baseline_ab.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    results = {}
    for item in args.rewards.split(";"):
        reward_name, _, seeds = item.rpartition(":")
        runs, base = [], None
        for seed in (int(s) for s in seeds.split(",")):
            for x0 in (False, True):
                r = run(reward_name, seed, x0, args.epochs, prompts, base)
                base = r["before"]
                runs.append({"seed": seed, "x0_baseline": x0} | r)
                print(reward_name, json.dumps(runs[-1]), flush=True)
        results[reward_name] = {"runs": runs} | {
            f"mean_gain_{name}": round(float(np.mean([r["gain"] for r in runs if r["x0_baseline"] == x0])), 4)
            for name, x0 in (("plain", False), ("x0", True))}
    args.out.write_text(json.dumps({
        "what": "toy preset with and without x0_baseline, gain in the training reward on 128 held-out samples; "
                "see bench/ddpo_baseline_ab.py", "epochs": args.epochs, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
