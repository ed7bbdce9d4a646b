"""One sampled image's denoising chain, kept beside the image so that D3PO can replay its steps.

D3PO's "responses" are the steps x_t -> x_{t-1} the sampling policy took; to score them under the policy being
trained, the chain (every latent), its timesteps and the sampler settings must be kept, and its log-probabilities
under the sampling policy, which is the reference within a round. ``p0003-s3001.png`` keeps its chain in
``p0003-s3001.traj.npz``, written to a temporary name and renamed, before the image is recorded in the store.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUFFIX = ".traj.npz"


@dataclass(frozen=True)
class Trajectory:
    latents: np.ndarray  # (T + 1, C, h, w) float32: x_T, ..., x_0 (exact: half-precision values widen losslessly)
    log_probs: np.ndarray  # (P,) float32: log pi_ref(x_{t-1} | x_t) of the stochastic steps, averaged over latent dimensions
    timesteps: np.ndarray  # (T,) int64
    eta: float
    guidance_scale: float

    def matches(self, other: "Trajectory") -> bool:
        """Sampled with the same schedule and sampler settings: replayable by one scheduler."""
        return (self.eta, self.guidance_scale) == (other.eta, other.guidance_scale) and np.array_equal(
            self.timesteps, other.timesteps) and self.latents.shape == other.latents.shape


def trajectory_path(image: Path) -> Path:
    return image.with_name(image.name.removesuffix(image.suffix) + SUFFIX)


def save_trajectory(path: Path, trajectory: Trajectory) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, latents=trajectory.latents.astype(np.float32), log_probs=trajectory.log_probs.astype(np.float32),
             timesteps=trajectory.timesteps.astype(np.int64), eta=trajectory.eta, guidance_scale=trajectory.guidance_scale)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def load_trajectory(path: Path) -> Trajectory:
    with np.load(path) as f:
        return Trajectory(f["latents"], f["log_probs"], f["timesteps"], float(f["eta"]), float(f["guidance_scale"]))
