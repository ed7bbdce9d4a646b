"""A toy round's DDPO epoch with all trained timesteps in one UNet forward (``timesteps_per_forward = 0``) against
the toy DDPO preset's 2 per forward, which the rounds use, under the round's settings (the KL to the base model,
which adds a reference forward, and the x0 state baseline).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/round_ddpo_speed.py   # about 8 min on 2 cores

Each repeat runs each variant in a fresh process (interleaved): 1 warm-up epoch, then 2 timed epochs; the figures
are medians over all timed epochs and the peak RSS over the repeats. The reward is the toy world's hidden taste
(``taste:striped``) rather than a fitted reward model, so no labels are needed; both variants score the same
images the same way, so the reward's cost does not change with the batch shape being measured.

Writes bench/results/round_ddpo_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "round_ddpo_speed.json"
VARIANTS = {"all_per_forward": 0, "preset_2_per_forward": 2}
REWARD = "taste:striped"
MARK = "@@RESULT@@"


def worker(per_forward: int, epochs: int) -> dict:
    import torch

    from rlhf.ddpo.rewards import make_reward
    from rlhf.ddpo.trainer import DDPOTrainer
    from rlhf.models import load_pipeline
    from rlhf.round.config import RoundConfig

    torch.manual_seed(0)
    round_cfg = RoundConfig()
    cfg = round_cfg.ddpo_config(1).replace(timesteps_per_forward=per_forward, save_every=0)
    with tempfile.TemporaryDirectory(prefix="round-ddpo-speed-") as run_dir:
        trainer = DDPOTrainer(load_pipeline(round_cfg.pipeline), make_reward(REWARD), cfg, run_dir)
        times = []
        for _ in range(1 + epochs):
            t = time.perf_counter()
            trainer.train_epoch()
            times.append(time.perf_counter() - t)
    return {"epoch_s": times[1:], "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "settings": {k: getattr(cfg, k) for k in ("num_steps", "sample_batch_size", "train_batch_size",
                                                       "kl_coef", "x0_baseline")}}


def run(per_forward: int, epochs: int) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, "--worker", str(per_forward), "--epochs", str(epochs)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        raise SystemExit(f"worker (timesteps_per_forward={per_forward}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="example: HF_HUB_OFFLINE=1 .venv/bin/python bench/round_ddpo_speed.py --repeats 3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per repeat (after 1 warm-up)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(MARK + json.dumps(worker(args.worker, args.epochs)), flush=True)
        return
    runs = {name: [] for name in VARIANTS}
    for r in range(args.repeats):
        for name, k in VARIANTS.items():
            runs[name].append(run(k, args.epochs))
            print(f"[{time.strftime('%H:%M:%S')}] repeat {r + 1} {name}: "
                  f"{[round(t, 2) for t in runs[name][-1]['epoch_s']]} s", flush=True)
    med = {name: statistics.median(t for one in runs[name] for t in one["epoch_s"]) for name in VARIANTS}
    result = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/round_ddpo_speed.py",
        "reward": REWARD, "repeats": args.repeats, "timed_epochs_per_repeat": args.epochs,
        "settings": runs["all_per_forward"][0]["settings"],
        "median_epoch_s": {name: round(v, 3) for name, v in med.items()},
        "epoch_s_raw": {name: [[round(t, 3) for t in one["epoch_s"]] for one in runs[name]] for name in VARIANTS},
        "peak_rss_mib": {name: round(max(one["peak_rss_kib"] for one in runs[name]) / 1024, 1) for name in VARIANTS},
        "epoch_time_ratio_all_vs_2": round(med["all_per_forward"] / med["preset_2_per_forward"], 3),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median epoch: all timesteps per forward {med['all_per_forward']:.2f} s, 2 per forward "
          f"{med['preset_2_per_forward']:.2f} s (ratio {result['epoch_time_ratio_all_vs_2']}); peak RSS "
          f"{result['peak_rss_mib']} MiB -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
