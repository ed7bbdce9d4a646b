"""How much signal is in one DDPO epoch's gradient, at which denoising steps is its noise, and how much of
that noise the predicted-x_0 state baseline (``x0_baseline``) removes?

    python bench/ddpo_variance.py [--estimates 16] [--rewards taste:placed,jpeg_incompressibility,taste:striped]

At the base model (toy preset: LoRA r4, 8 prompts x 8 trajectories x 10 steps an epoch), ``--estimates``
independent epochs of trajectories each give the policy gradient (DDPO-IS at ratio 1, per-prompt advantages
from a fresh tracker) twice on the same trajectories: with the reference's advantages ("plain") and less the
state baseline ("x0"), one part per denoising step. From N independent estimates g_i of the true gradient mu:
|mu|^2 = (|sum g_i|^2 - sum |g_i|^2) / (N (N - 1)) (unbiased) and the noise of one estimate
s^2 = sum |g_i - mean g|^2 / (N - 1), so SNR = |mu|^2 / s^2 per epoch of 64 trajectories; averaging k epochs
multiplies it by k. The SNR's standard error is a jackknife over the N estimates: |mu|^2 is small next to s^2,
so it needs many estimates to be resolved, while s^2 is resolved by a few.
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

VARIANTS = ("plain", "x0")


def step_gradients(trainer: DDPOTrainer, traj, adv: torch.Tensor) -> torch.Tensor:
    """The policy gradient of ``traj`` with advantages ``adv`` (N, T), split by denoising step: (T, n_params)."""
    cfg = trainer.cfg
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


def epoch_gradients(trainer: DDPOTrainer) -> dict[str, torch.Tensor]:
    """One fresh epoch of trajectories at the current weights, its gradient per step for each variant."""
    traj, rewards, values, _ = trainer.sample()
    out = {}
    for variant in VARIANTS:
        trainer.stats = PerPromptStatTracker(trainer.cfg.stat_buffer_size, trainer.cfg.stat_min_count)  # independent
        adv = trainer.advantages(traj.prompts, rewards, values if variant == "x0" else None)[0]  # (N, T)
        out[variant] = step_gradients(trainer, traj, torch.as_tensor(adv, dtype=torch.float32))
    return out


def signal_sq(g: torch.Tensor) -> float:
    n = len(g)
    return float((g.sum(0).square().sum() - g.square().sum()) / (n * (n - 1)))


def noise_sq(g: torch.Tensor) -> float:
    return float((g - g.mean(0)).square().sum() / (len(g) - 1))


def snr(g: torch.Tensor) -> dict:
    """Signal and noise of N independent estimates g (N, D) of one gradient, with the SNR's jackknife error."""
    g = g.double()
    n = len(g)
    signal, noise = signal_sq(g), noise_sq(g)
    jack = torch.tensor([signal_sq(torch.cat([g[:i], g[i + 1:]])) for i in range(n)])
    se = float(((n - 1) / n * (jack - jack.mean()).square().sum()).sqrt())
    return {"signal_sq": signal, "signal_sq_se": se, "noise_sq": noise, "snr_per_epoch": round(signal / noise, 4),
            "snr_se": round(se / noise, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimates", type=int, default=16, help="independent epochs at the base model")
    parser.add_argument("--rewards", default="taste:placed,jpeg_incompressibility,taste:striped")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_variance.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    results, start = {}, time.perf_counter()
    for reward_name in args.rewards.split(","):
        cfg = PRESETS["toy"].replace(prompts=prompts, seed=1, x0_baseline=True)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = DDPOTrainer(load_pipeline(), make_reward(reward_name), cfg, run_dir)
            estimates = [epoch_gradients(trainer) for _ in range(args.estimates)]
        results[reward_name] = {}
        for variant in VARIANTS:
            g = torch.stack([e[variant] for e in estimates])  # (N, T, D)
            per_step_noise = [noise_sq(g[:, t].double()) for t in range(g.shape[1])]
            results[reward_name][variant] = snr(g.sum(1)) | {
                "per_step_share_of_noise": [round(s / sum(per_step_noise), 3) for s in per_step_noise]}
        plain, x0 = results[reward_name]["plain"], results[reward_name]["x0"]
        results[reward_name]["noise_ratio_plain_over_x0"] = round(plain["noise_sq"] / x0["noise_sq"], 2)
        print(reward_name, json.dumps(results[reward_name]), flush=True)
    args.out.write_text(json.dumps({
        "what": "signal-to-noise of one toy-preset DDPO epoch's gradient at the base model, with and without the "
                "predicted-x_0 state baseline on the same trajectories; see bench/ddpo_variance.py",
        "estimates": args.estimates, "seconds": round(time.perf_counter() - start, 1), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
