"""How much signal is in one DDPO epoch's gradient, and at which denoising steps?

    python bench/ddpo_variance.py [--estimates 16] [--rewards taste:placed,jpeg_incompressibility]

At the base model (toy preset: LoRA r4, 8 prompts x 8 trajectories x 10 steps an epoch), ``--estimates``
independent epochs of trajectories each give the policy gradient (DDPO-IS at ratio 1, per-prompt advantages
from a fresh tracker), one part per denoising step. From N independent estimates g_i of the true gradient mu:
|mu|^2 = (|sum g_i|^2 - sum |g_i|^2) / (N (N - 1)) (unbiased) and the noise of one estimate
s^2 = sum |g_i - mean g|^2 / (N - 1), so SNR = |mu|^2 / s^2 per epoch of 64 trajectories; averaging k epochs
multiplies it by k, and the expected cosine between two independent estimates is SNR / (1 + SNR). "Steps
balanced" divides each step's part by its noise norm before summing, so that no one step dominates the sum.
Writes bench/results/ddpo_variance.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from rlhf.ddpo.advantages import PerPromptStatTracker
from rlhf.ddpo.config import PRESETS
from rlhf.ddpo.rewards import make_reward
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.models import load_pipeline
from rlhf.prompts import load_prompts


def step_gradients(trainer: DDPOTrainer) -> torch.Tensor:
    """One epoch's policy gradient at the current weights, split by denoising step: (T, n_params)."""
    cfg = trainer.cfg
    trainer.stats = PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)  # estimates stay independent
    traj, rewards, _ = trainer.sample()
    adv = torch.as_tensor(trainer.advantages(traj.prompts, rewards)[0], dtype=torch.float32)
    trainer.unet.train()
    grads = []
    for step in range(len(traj.timesteps)):
        for start in range(0, len(traj), cfg.train_batch_size):
            idx = torch.arange(start, start + cfg.train_batch_size)
            loss, _ = trainer._chunk_loss(traj.select(idx), adv[idx], torch.full((len(idx), 1), step))
            (loss * len(idx) / len(traj) / len(traj.timesteps)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
        trainer.optimizer.zero_grad(set_to_none=True)
    return torch.stack(grads)


def snr(g: torch.Tensor) -> dict:
    """Signal and noise of N independent estimates g (N, D) of one gradient."""
    n = len(g)
    signal = float((g.sum(0).square().sum() - g.square().sum()) / (n * (n - 1)))
    noise = float((g - g.mean(0)).square().sum() / (n - 1))
    return {"signal_sq": signal, "noise_sq": noise, "snr_per_epoch": round(signal / noise, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimates", type=int, default=16, help="independent epochs at the base model")
    parser.add_argument("--rewards", default="taste:placed,jpeg_incompressibility")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_variance.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    results, start = {}, time.perf_counter()
    for reward_name in args.rewards.split(","):
        cfg = PRESETS["toy"].replace(prompts=prompts, seed=1)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = DDPOTrainer(load_pipeline(), make_reward(reward_name), cfg, run_dir)
            g = torch.stack([step_gradients(trainer) for _ in range(args.estimates)])  # (N, T, D)
        whole = snr(g.sum(1))
        per_step = [snr(g[:, t]) for t in range(g.shape[1])]
        balanced = snr((g / torch.tensor([s["noise_sq"] for s in per_step]).sqrt()[:, None]).sum(1))
        results[reward_name] = whole | {
            "epochs_for_cosine_0.5": round(1 / whole["snr_per_epoch"], 1) if whole["snr_per_epoch"] > 0 else None,
            "snr_per_epoch_steps_balanced": balanced["snr_per_epoch"],
            "per_step_snr_first_to_last": [s["snr_per_epoch"] for s in per_step],
            "per_step_share_of_signal": [round(s["signal_sq"] / sum(max(x["signal_sq"], 0) for x in per_step), 3)
                                         for s in per_step],
            "per_step_share_of_noise": [round(s["noise_sq"] / sum(x["noise_sq"] for x in per_step), 3) for s in per_step],
        }
        print(reward_name, json.dumps(results[reward_name]), flush=True)
    args.out.write_text(json.dumps({
        "what": "signal-to-noise of one toy-preset DDPO epoch's gradient at the base model; see bench/ddpo_variance.py",
        "estimates": args.estimates, "seconds": round(time.perf_counter() - start, 1), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
