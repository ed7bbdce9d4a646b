"""DDPO on the toy latent consistency model (4 consistency steps) against DDPO on the toy SD (10 DDIM steps): the
same engine, reward, settings and sweep procedure as bench/ddpo_vs_trl.py, whose workers run every job.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/lcm_ddpo.py   # about 30 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/lcm_ddpo.py --timing-only   # the epoch timing again, 2 min

Measured, per model (data/models/toy-lcm, data/models/toy-sd), with the toy training prompts:

* Epoch time at ddpo_vs_trl's timing setting (8 samples an epoch, LoRA r4, lr 1e-2, clip 1e-2, train batch 4):
  per repeat a fresh process, 1 warm-up epoch, 2 timed epochs, the two models interleaved; the median over all
  timed epochs. The LCM samples with one UNet call a step (its guidance scale is embedded), the SD with two (CFG).
* Time to reward: ddpo_vs_trl's LoRA sweep settings, each with every seed of ``SEEDS``, on ``taste:striped`` to
  the same target gain; every 2 epochs the policy is scored on held-out noise at its own steps; time to reward is
  the training time until the gain first reaches the target. Each model is judged at its best setting by
  ddpo_vs_trl's rule (the most seeds crossing, then the fastest median); the ratio is of those two medians.
* Prompt following before and after training (each run; the chosen setting's median over seeds): the share of
  the 32 toy evaluation prompts x 2 seeds whose image shows every attribute asked for, at the policy's own steps.

Writes bench/results/lcm_ddpo.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddpo_vs_trl import (EVAL_EVERY, SWEEP, TASKS, TASTE_TASK, TIMING_SETTING, best_setting, reward_run,  # noqa: E402
                         run_job, setting_summary)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "lcm_ddpo.json"
MODELS = {"sd": {"pipeline": str(ROOT / "data" / "models" / "toy-sd"), "epoch": {"num_steps": 10}},
          "lcm": {"pipeline": str(ROOT / "data" / "models" / "toy-lcm"), "epoch": {"num_steps": 4}}}
SETTINGS = {name: setting for name, setting in SWEEP.items() if setting["use_lora"]}
SEEDS = (42, 1, 2)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timing(repeats: int) -> dict:
    runs = {m: [] for m in MODELS}
    for r in range(repeats):
        for m, job in MODELS.items():
            runs[m].append(run_job(dict(kind="timing", engine="ours", setting=TIMING_SETTING, reward=TASTE_TASK,
                                        warmup=1, epochs=2, **job)))
            log(f"timing repeat {r + 1} {m}: epochs {[round(t, 2) for t in runs[m][-1]['epoch_s']]} s")
    med = {m: statistics.median(t for run in runs[m] for t in run["epoch_s"]) for m in MODELS}
    return {"repeats": repeats, "median_epoch_s": {m: round(v, 3) for m, v in med.items()},
            "epoch_s_raw": {m: [[round(t, 3) for t in run["epoch_s"]] for run in runs[m]] for m in MODELS},
            "peak_rss_mib": {m: round(max(run["peak_rss_kib"] for run in runs[m]) / 1024, 1) for m in MODELS},
            "epoch_time_ratio_lcm_vs_sd": round(med["lcm"] / med["sd"], 3)}


def sweep(target: float, max_epochs: int) -> dict:
    out = {}
    for m, job in MODELS.items():
        out[m] = {}
        for name, setting in SETTINGS.items():
            runs = {str(seed): reward_run("ours", setting, TASTE_TASK, target, max_epochs, seed, following=True, **job)
                    for seed in SEEDS}
            out[m][name] = summary = setting_summary(runs)
            log(f"{m:<4} {name:<40} time to +{target} by seed: {summary['time_to_target_s']}")
        best = best_setting(out[m])
        runs = out[m][best]["seeds"].values()
        out[f"{m}_best"] = {"setting": best, "median_time_to_target_s": out[m][best]["median_time_to_target_s"],
                            "time_to_target_s": out[m][best]["time_to_target_s"],
                            "prompt_following_all": {
                                when: round(statistics.median(r[f"following_{when}"]["all"] for r in runs), 4)
                                for when in ("before", "after")}}
    lcm, sd = out["lcm_best"]["median_time_to_target_s"], out["sd_best"]["median_time_to_target_s"]
    out["time_to_reward_ratio_lcm_vs_sd"] = round(lcm / sd, 3) if lcm is not None and sd is not None else None
    if out["time_to_reward_ratio_lcm_vs_sd"] is None:
        out["ratio_reason"] = f"{'the LCM' if lcm is None else 'the SD'}'s best median seed did not reach +{target} in {max_epochs} epochs"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (fresh processes) per model")
    parser.add_argument("--timing-only", action="store_true", help="time the epochs again; keep the stored time to reward")
    parser.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    args = parser.parse_args()
    start = time.perf_counter()
    target, max_epochs = TASKS[TASTE_TASK]
    stored = json.loads(OUT.read_text()) if args.timing_only else {}
    result = {"what": "DDPO (this engine) on the toy LCM at 4 consistency steps against the toy SD at 10 DDIM steps, "
                      "same reward, settings and sweep procedure as bench/ddpo_vs_trl.py; CPU fp32, 1 torch thread, nice 10",
              "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/lcm_ddpo.py",
              "lcm_steps": MODELS["lcm"]["epoch"]["num_steps"], "sd_steps": MODELS["sd"]["epoch"]["num_steps"],
              "task": TASTE_TASK, "target_gain": target, "max_epochs": max_epochs, "eval_every": EVAL_EVERY,
              "seeds": list(SEEDS), "settings": SETTINGS, "timing_setting": TIMING_SETTING}
    result["timing"] = timing(args.repeats)
    timed = time.perf_counter()
    result["time_to_reward"] = stored["time_to_reward"] if args.timing_only else sweep(target, max_epochs)
    ttr = result["time_to_reward"]
    result |= {"epoch_time_ratio_lcm_vs_sd": result["timing"]["epoch_time_ratio_lcm_vs_sd"],
               "time_to_reward_ratio_lcm_vs_sd": ttr["time_to_reward_ratio_lcm_vs_sd"],
               "prompt_following_all": {m: ttr[f"{m}_best"]["prompt_following_all"] for m in MODELS},
               "benchmark_wall_s": stored.get("benchmark_wall_s", round(time.perf_counter() - start, 1)),
               "timing_wall_s": round(timed - start, 1)}
    summary = {k: result[k] for k in ("epoch_time_ratio_lcm_vs_sd", "time_to_reward_ratio_lcm_vs_sd", "lcm_steps",
                                      "prompt_following_all")}
    print(json.dumps(summary, indent=2))
    if not args.dry_run:
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {OUT}")


if __name__ == "__main__":
    main()
