"""D3PO (Yang et al. 2023, arXiv 2311.13231): DPO over the steps of the denoising MDP, with no reward model.

A labelled pair's two images were sampled by the round's policy, which kept each one's chain (`rlhf.dpo.trajectory`).
Each optimizer step replays a share of every pair's steps x_t -> x_{t-1} under the policy being trained, with the
step log-probability DDPO uses (the pipeline adapter's DDIM or LCM step), and descends `rlhf.dpo.loss.d3po_loss` on the
log-ratios to the reference. The reference is the policy that sampled the pair (the round's starting policy), whose
log-probabilities were stored at sampling, so no reference forward is needed. Unlike the authors' code, which
steps the optimizer once per timestep, one step's gradient sums over the pair's chosen timesteps (as DDPO's does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlhf.adapters import PipelineAdapter
from rlhf.dpo.data import PairsError, PreferencePair
from rlhf.dpo.loss import d3po_loss
from rlhf.dpo.trainer import PreferenceTrainer
from rlhf.dpo.trajectory import Trajectory, load_trajectory, trajectory_path


@dataclass(frozen=True)
class TrajectoryPair:
    prompt: str
    winner: Trajectory
    loser: Trajectory


def trajectory_pairs(pairs: list[PreferencePair]) -> tuple[list[TrajectoryPair], int]:
    """The pairs whose two images have a stored trajectory, and how many have not (imported labels, images given
    as bytes, or images sampled by a round of another method)."""
    found, missing = [], 0
    for p in pairs:
        paths = [trajectory_path(x) if isinstance(x, Path) else None for x in (p.winner, p.loser)]
        if all(q is not None and q.is_file() for q in paths):
            found.append(TrajectoryPair(p.prompt, *map(load_trajectory, paths)))
        else:
            missing += 1
    return found, missing


def require_trajectories(pairs: list[PreferencePair]) -> list[TrajectoryPair]:
    """`trajectory_pairs`, refusing with one line when some pair has no trajectory."""
    found, missing = trajectory_pairs(pairs)
    if missing:
        raise PairsError(f"D3PO needs each pair's two sampling trajectories, and {missing} of {len(pairs)} pairs have "
                         "none (imported labels, or images not sampled by a round with method d3po); train those with "
                         "method diffusion_dpo")
    return found


class D3POTrainer(PreferenceTrainer):
    METHOD = "d3po"
    NEEDS_REFERENCE_COPY = False  # the reference's log-probabilities are stored with the trajectories

    def train(self, pairs: list[TrajectoryPair], steps: int | None = None, progress: bool = True) -> list[dict]:
        first = pairs[0].winner
        if not all(first.matches(t) for p in pairs for t in (p.winner, p.loser)):
            raise PairsError("the pairs' trajectories were sampled with different steps, eta or guidance; train on the "
                             "pairs of one round at a time")
        self.adapter = PipelineAdapter(self.pipe)
        self.scheduler = self.adapter.scheduler(len(first.timesteps))
        if not np.array_equal(self.scheduler.timesteps.numpy(), first.timesteps):
            raise PairsError(f"the trajectories' timesteps {first.timesteps.tolist()} are not this pipeline's "
                             f"schedule {self.scheduler.timesteps.tolist()}; train with the pipeline that sampled them")
        self.eta, self.guidance_scale = first.eta, first.guidance_scale
        return super().train(pairs, steps, progress)

    def accumulate(self, batch: list[TrajectoryPair], scale: float) -> dict:
        """Each pair's own random ``timestep_fraction`` of steps, winners and losers stacked into one forward per
        ``timesteps_per_forward`` of them."""
        device, cfg = self.accelerator.device, self.cfg
        n_steps = len(batch[0].winner.log_probs)  # the stochastic steps
        k = max(1, round(n_steps * cfg.timestep_fraction))
        chosen = np.stack([self.rng.permutation(n_steps)[:k] for _ in batch])  # (B, k)
        cond = self.adapter.encode([p.prompt for p in batch], device).repeat(2)  # (2B, ...): winners, then losers
        chains = [p.winner for p in batch] + [p.loser for p in batch]
        latents = torch.from_numpy(np.stack([c.latents for c in chains])).to(device, cond.embeds.dtype)  # (2B, T+1, C, h, w)
        ref_log_probs = torch.from_numpy(np.stack([c.log_probs for c in chains])).to(device)  # (2B, P)
        timesteps = torch.from_numpy(batch[0].winner.timesteps).to(device)  # (T,)
        steps_idx = torch.from_numpy(np.concatenate([chosen, chosen])).to(device)  # (2B, k): a pair's two at one step
        rows = torch.arange(2 * len(batch), device=device)[:, None]  # (2B, 1)
        width = cfg.timesteps_per_forward or k
        logs: dict[str, float] = {}
        for start in range(0, k, width):
            idx = steps_idx[:, start:start + width]  # (2B, c)
            c = idx.shape[1]
            x, x_next = latents[rows, idx].flatten(0, 1), latents[rows, idx + 1].flatten(0, 1)  # (2B*c, C, h, w)
            t = timesteps[idx].flatten()  # (2B*c,)
            with self.accelerator.autocast():
                out = self.adapter.predict(self.unet, x, t, cond.repeat_interleave(c), self.guidance_scale)
            log_prob = self.adapter.step(self.scheduler, out, t, x, self.eta, prev_sample=x_next).log_prob  # (2B*c,)
            ref = ref_log_probs[rows, idx].flatten()  # (2B*c,)
            loss, info = d3po_loss(*log_prob.chunk(2), *ref.chunk(2), cfg.beta, cfg.clip_range)
            self.accelerator.backward(loss * scale * c / k)
            for name, value in (info | {"loss": loss.detach()}).items():
                logs[f"dpo/{name}"] = logs.get(f"dpo/{name}", 0.0) + float(value) * c / k
        return logs
