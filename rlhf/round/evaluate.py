"""Judging a policy on fixed prompts and fixed seeds, so rounds are compared on identical starting noise.

Two prompt sets: the training prompts with seeds never used for labelling or DDPO (does the policy get better
at what it was trained on?) and a held-out prompt set (does it generalise, and does it still draw what is
asked?). In the toy world the hidden taste and the analyser's prompt-following are ground truth; the learned
reward, next to the hidden score, shows how far the reward model and the truth drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlhf.ddpo.sampling import sample_trajectories
from rlhf.toy.tastes import TASTES
from rlhf.toy.world import parse_caption

EVAL_SEED = 10**9
"""Evaluation seeds start here: far from labelling seeds (prompt x 1000 + k) and DDPO's own generator."""


@dataclass(frozen=True)
class EvalSet:
    name: str
    prompts: list[str]
    seeds: int

    def jobs(self) -> tuple[list[str], list[int]]:
        """(prompt, seed) per image, prompt-major; the seed depends only on the prompt's position and k."""
        prompts = [p for p in self.prompts for _ in range(self.seeds)]
        seeds = [EVAL_SEED + i * 100 + k for i in range(len(self.prompts)) for k in range(self.seeds)]
        return prompts, seeds


def paired_change(after: np.ndarray, before: np.ndarray) -> dict[str, float]:
    """Mean change of per-image scores of two policies on the same prompts and seeds, with its paired standard
    error: the noise a rise must clear."""
    change = np.asarray(after) - np.asarray(before)
    return {"mean": round(float(change.mean()), 4), "se": round(float(change.std(ddof=1) / len(change) ** 0.5), 4)}


def draw(pipe, unet, prompts: list[str], seeds: list[int], *, num_steps: int, eta: float, guidance_scale: float,
         batch_size: int = 32) -> np.ndarray:
    """One image per (prompt, seed) from the stochastic DDIM policy, each depending only on its own seed."""
    images = []
    for start in range(0, len(prompts), batch_size):
        gens = [torch.Generator(pipe.vae.device).manual_seed(s) for s in seeds[start:start + batch_size]]
        traj = sample_trajectories(pipe, unet, prompts[start:start + batch_size], num_steps=num_steps, eta=eta,
                                   guidance_scale=guidance_scale, generator=gens)
        images.append(traj.images)
    return np.concatenate(images)


def prompt_following(images: np.ndarray, prompts: list[str]) -> float | None:
    """Mean share of the asked attributes the analyser finds (toy prompts only; None for others)."""
    if any(parse_caption(p) is None for p in prompts):
        return None
    return float(TASTES["faithful"].score(list(images), prompts).mean())


def metrics(images: np.ndarray, prompts: list[str], *, reward_model=None, scorers: dict | None = None,
            taste: str | None = None) -> dict:
    """The figures one evaluated image set gets: the learned reward's ensemble mean and std, each DDPO-style
    reward in ``scorers`` (CLIP score, aesthetic head) by name, and the hidden taste; each judge is optional."""
    out: dict[str, float | None] = {"images": len(images), "prompt_following": prompt_following(images, prompts)}
    if reward_model is not None:
        mean, std = reward_model.score(images, prompts)
        out |= {"learned_reward": float(mean.mean()), "learned_reward_std": float(std.mean())}
    for name, scorer in (scorers or {}).items():
        out[name] = float(np.mean(scorer(images, prompts, [{}] * len(prompts))[0]))
    if taste is not None:
        out["hidden_score"] = float(TASTES[taste].score(list(images), prompts).mean())
    return out
