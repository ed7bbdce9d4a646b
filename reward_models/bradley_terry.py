"""The Bradley-Terry loss: the one place where a pairwise choice becomes a training signal.

P(a preferred over b) = sigmoid(score_a - score_b). Targets are P(a preferred): 1 when a won, 0 when b won,
and 0.5 for a tie: a soft 0.5/0.5 target (PickScore's convention), whose gradient vanishes exactly when the
two scores are equal, so a tie pulls the pair together instead of being thrown away (ImageReward and D3PO
drop ties). 'both_bad' and 'skip' are not preferences: they say nothing about which image is better and
never reach this loss (``targets`` refuses them).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CHOICE_TARGETS = {"left": 1.0, "right": 0.0, "tie": 0.5}  # a = the left image


def targets(choices: Sequence[str]) -> np.ndarray:
    """P(left preferred) for each choice; 'both_bad', 'skip' and anything else raise."""
    bad = [c for c in choices if c not in CHOICE_TARGETS]
    if bad:
        raise ValueError(f"choice {bad[0]!r} is not a preference; keep only {', '.join(CHOICE_TARGETS)} "
                         "(the label store's preferences() already drops 'both_bad' and 'skip')")
    return np.array([CHOICE_TARGETS[c] for c in choices], np.float32)


def bt_loss(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(score_a - score_b) against P(a preferred) in [0, 1]."""
    return F.binary_cross_entropy_with_logits(score_a - score_b, target.to(score_a.dtype), weight=weight)
