"""Advantages for DDPO: rewards standardised per prompt (Black et al. 2023, App. D.3).

DDPO has no critic. Standardising each prompt's rewards by that prompt's running mean and std is its baseline:
without it, prompts that are easy to score highly would dominate the gradient. Follows kvablack/ddpo-pytorch's
stat_tracking.py.
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

    def update(self, prompts: Sequence[str], rewards: np.ndarray) -> np.ndarray:
        """Add a batch of rewards (N,) and return their advantages (N,), float64.

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
        advantages = np.empty_like(rewards)  # (N,)
        for prompt in dict.fromkeys(prompts):
            mask = prompt_array == prompt  # (N,)
            buffer = self._buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(float(r) for r in rewards[mask])
            reference = np.fromiter(buffer, dtype=np.float64) if len(buffer) >= self.min_count else rewards
            advantages[mask] = (rewards[mask] - reference.mean()) / (reference.std() + _EPS)
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


def clip_advantages(advantages: Advantages, limit: float) -> Advantages:
    """Clamp advantages to [-limit, limit]: one outlier reward should not take a large step (DDPO uses 5)."""
    if not limit > 0:
        raise ValueError(f"limit={limit!r} must be > 0; DDPO uses 5.")
    if isinstance(advantages, torch.Tensor):
        return advantages.clamp(-limit, limit)
    return np.clip(advantages, -limit, limit)
