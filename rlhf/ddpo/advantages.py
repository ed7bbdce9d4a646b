"""Advantages for DDPO: rewards standardised per prompt (Black et al. 2023, App. D.3), optionally less a
per-step state baseline.

DDPO has no critic. Standardising each prompt's rewards by that prompt's running mean and std is its baseline:
without it, prompts that are easy to score highly would dominate the gradient. Follows kvablack/ddpo-pytorch's
stat_tracking.py. `state_baseline` (not in the reference) goes further, one baseline per denoising step.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

_EPS = 1e-6  # keeps a prompt whose rewards are all equal at advantage 0 instead of 0 / 0

Advantages = TypeVar("Advantages", np.ndarray, torch.Tensor)


class PerPromptStatTracker:
    """The last `buffer_size` rewards of each prompt, and advantages standardised by them.

    Until a prompt has `min_count` rewards its own statistics are too noisy to trust, so its advantages use
    the statistics of the whole current batch instead.
    """

    def __init__(self, buffer_size: int, min_count: int) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be >= 1; kvablack/ddpo-pytorch uses 16.")
        if not 1 <= min_count <= buffer_size:
            raise ValueError(
                f"min_count={min_count} must be in [1, buffer_size={buffer_size}], else a prompt never gets its own "
                "statistics; lower min_count or raise buffer_size."
            )
        self.buffer_size = buffer_size
        self.min_count = min_count
        self._buffers: dict[str, deque[float]] = {}

    def update(self, prompts: Sequence[str], rewards: np.ndarray, baseline: np.ndarray | None = None) -> np.ndarray:
        """Add a batch of rewards (N,) and return their advantages (N,), float64; with a per-step ``baseline``
        (N, T) in reward units (`state_baseline`), (reward - baseline - mean) / std per step, (N, T).

        A prompt's statistics include this batch's rewards for it, so a batch of fresh prompts is standardised
        against itself rather than against nothing.
        """
        rewards = np.asarray(rewards, dtype=np.float64)  # (N,)
        if rewards.ndim != 1 or len(prompts) != len(rewards):
            raise ValueError(
                f"got {len(prompts)} prompts and rewards of shape {rewards.shape}; "
                "pass one reward per prompt, shape (N,)."
            )
        prompt_array = np.asarray(prompts, dtype=object)  # (N,)
        if baseline is not None and baseline.shape[0] != len(rewards):
            raise ValueError(f"baseline has shape {baseline.shape} for {len(rewards)} rewards; pass (N, T).")
        advantages = np.empty(rewards.shape + ((baseline.shape[1],) if baseline is not None else ()))  # (N,) or (N, T)
        for prompt in dict.fromkeys(prompts):
            mask = prompt_array == prompt  # (N,)
            buffer = self._buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(float(r) for r in rewards[mask])
            reference = np.fromiter(buffer, dtype=np.float64) if len(buffer) >= self.min_count else rewards
            centred = rewards[mask] - reference.mean()  # (n,)
            if baseline is not None:
                centred = centred[:, None] - baseline[mask]  # (n, T)
            advantages[mask] = centred / (reference.std() + _EPS)
        return advantages

    def stats(self) -> dict[str, dict[str, float]]:
        """Per prompt: mean, std and count of the buffered rewards, for logging."""
        return {
            prompt: {"mean": float(np.mean(buffer)), "std": float(np.std(buffer)), "count": len(buffer)}
            for prompt, buffer in self._buffers.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot; `load_state_dict` of it restores the exact advantages a resumed run would give."""
        return {
            "buffer_size": self.buffer_size,
            "min_count": self.min_count,
            "buffers": {prompt: list(buffer) for prompt, buffer in self._buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the buffers of `state_dict()`; the settings must match, as they decide every later advantage."""
        saved = (state["buffer_size"], state["min_count"])
        if saved != (self.buffer_size, self.min_count):
            raise ValueError(
                f"checkpoint has buffer_size, min_count = {saved} but this tracker has "
                f"{(self.buffer_size, self.min_count)}; construct the tracker with the checkpoint's settings."
            )
        self._buffers = {
            prompt: deque((float(r) for r in rewards), maxlen=self.buffer_size)
            for prompt, rewards in state["buffers"].items()
        }


def state_baseline(rewards: np.ndarray, values: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """A baseline per sample and denoising step from ``values`` (N, T), the rewards of each step's predicted x_0.

    DDPO credits every step with the whole trajectory's reward r, yet late in denoising x_t has all but fixed
    the image, so those steps' score-function terms add noise and almost no signal (on the toy pipeline the
    penultimate of 10 DDIM steps carried 73-84% of a gradient's noise: bench/ddpo_variance.py). Any function of
    the state x_t is an unbiased baseline for the step that leaves it (E[grad log pi(a | s) b(s)] = 0); the
    reward of the model's own prediction of x_0 from x_t is a cheap one that tracks r closely late and loosely
    early. So that a loose one cannot add variance, each step t uses b = beta_t * (v_t - its group mean), with
    beta_t the least-squares fit of the group-centred rewards on the group-centred v_t over the batch (a fit
    on the same batch, so biased by O(1/N)): the variance left is (1 - corr_t^2) of the group-centred rewards.
    `StateBaselineFit` fits beta_t on earlier batches instead.

    Returns the baseline (N, T) in reward units, zero-mean within each group (prompt), and per step the share
    of the group-centred reward variance it removes, (T,).
    """
    r, v = centre_in_groups(rewards, values, groups)
    return _apply(fit_beta(r, v), r, v)


def centre_in_groups(rewards: np.ndarray, values: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Rewards (N,) and values (N, T) less their group (prompt) means."""
    rewards = np.asarray(rewards, dtype=np.float64)  # (N,)
    values = np.asarray(values, dtype=np.float64)  # (N, T)
    if values.ndim != 2 or values.shape[0] != len(rewards) or len(groups) != len(rewards):
        raise ValueError(f"got {len(rewards)} rewards, {len(groups)} groups and values of shape {values.shape}; pass (N,), (N,) and (N, T).")
    group_array = np.asarray(groups, dtype=object)  # (N,)
    r, v = rewards.copy(), values.copy()
    for group in dict.fromkeys(groups):
        mask = group_array == group  # (N,)
        r[mask] -= r[mask].mean()
        v[mask] -= v[mask].mean(axis=0)
    return r, v


def fit_beta(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per step, the least-squares slope (T,) of centred rewards (N,) on centred values (N, T)."""
    return (r[:, None] * v).sum(0) / np.maximum((v * v).sum(0), 1e-12)


def _apply(beta: np.ndarray, r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    baseline = beta * v  # (N, T)
    removed = 1 - ((r[:, None] - baseline) ** 2).sum(0) / max((r * r).sum(), 1e-12)  # (T,)
    return baseline, removed


class StateBaselineFit:
    """`state_baseline` with beta_t fitted on the last ``buffer_size`` samples of earlier batches.

    With a few samples a batch the same-batch fit is noisy (10 slopes from 8 samples of 2 prompts), and it
    feeds each sample's own reward back into its baseline. Slopes from earlier batches are independent of the
    batch they are applied to, so the baseline is exactly unbiased, and they rest on many more samples; they
    can add variance where the slope has moved since (``removed`` < 0 then). The first batch, with no history,
    is fitted on itself.
    """

    def __init__(self, buffer_size: int) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be >= 1 (samples of earlier batches to fit on).")
        self.buffer_size = buffer_size
        self._r: deque[float] = deque(maxlen=buffer_size)
        self._v: deque[list[float]] = deque(maxlen=buffer_size)

    def __call__(self, rewards: np.ndarray, values: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Baseline (N, T) and variance removed (T,) as `state_baseline`; then adds the batch to the history."""
        r, v = centre_in_groups(rewards, values, groups)
        beta = fit_beta(np.array(self._r), np.array(self._v)) if self._r else fit_beta(r, v)
        self._r.extend(r.tolist())
        self._v.extend(v.tolist())
        return _apply(beta, r, v)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_size": self.buffer_size, "rewards": list(self._r), "values": list(self._v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["buffer_size"] != self.buffer_size:
            raise ValueError(f"checkpoint has a baseline history of {state['buffer_size']} samples but this run "
                             f"keeps {self.buffer_size}; resume with the checkpoint's x0_baseline_history.")
        self._r = deque(state["rewards"], maxlen=self.buffer_size)
        self._v = deque(state["values"], maxlen=self.buffer_size)


def clip_advantages(advantages: Advantages, limit: float) -> Advantages:
    """Clamp advantages to [-limit, limit]: one outlier reward should not take a large step (DDPO uses 5)."""
    if not limit > 0:
        raise ValueError(f"limit={limit!r} must be > 0; DDPO uses 5.")
    if isinstance(advantages, torch.Tensor):
        return advantages.clamp(-limit, limit)
    return np.clip(advantages, -limit, limit)
