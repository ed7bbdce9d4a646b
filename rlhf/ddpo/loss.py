"""DDPO's policy-gradient surrogates (Black et al. 2023, Sec. 4.4): losses whose gradients are Eq. 3 and Eq. 4.

Both take per-step log-densities log p_theta(x_{t-1} | x_t, c) from `rlhf.ddpo.logprob` and advantages A
(normalised rewards r(x_0, c), see `rlhf.ddpo.advantages`), all of shape (B,), and return a scalar to minimise.

Why the two agree at the start of an update: with ratio = p_theta / p_theta_old, grad ratio = ratio * grad log p_theta.
On the policy that drew the samples (logp == logp_old) the ratio is 1 and inside the clip range, so
grad(-A * ratio) = -A * grad log p_theta = grad(-A * log p_theta): DDPO_IS's first gradient is DDPO_SF's. They part
only after theta has moved, where the ratio reweights the stale samples and the clip stops theta leaving the
trust region around theta_old; that is what lets DDPO_IS take several steps per batch of samples.
"""
from __future__ import annotations

import torch


def _check_shapes(**tensors: torch.Tensor) -> None:
    """All inputs are one value per sample; a silent broadcast of (B,) against (B, 1) would give a (B, B) loss."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes differ: {shapes}; pass one value per sample, all of shape (B,).")


def score_function_loss(log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """DDPO_SF (Eq. 3, REINFORCE): -mean(A * log p_theta), whose gradient is the score-function estimator.

    Valid only on samples drawn by the current theta, hence one gradient step per batch of samples.
    """
    _check_shapes(log_prob=log_prob, advantages=advantages)
    return -(advantages * log_prob).mean()  # ()


def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO_IS (Eq. 4 with PPO's clipped surrogate): mean(max(-A * ratio, -A * clamp(ratio, 1 - c, 1 + c))).

    The max takes the pessimistic of the two, so once the ratio leaves [1 - c, 1 + c] in the direction that A
    rewards (A > 0 and ratio > 1 + c, or A < 0 and ratio < 1 - c) the loss is flat and the gradient zero.
    Black et al. use a very small c (1e-4, App. D.1), as log_prob is a per-dimension average.

    Returns the loss () and detached diagnostics: `approx_kl` = 0.5 * mean((logp - logp_old)^2), an estimate of
    KL(p_theta_old || p_theta), and `clipfrac`, the share of samples whose ratio is outside the clip range.
    """
    if not clip_range > 0:
        raise ValueError(f"clip_range={clip_range!r} must be > 0; DDPO uses 1e-4.")
    _check_shapes(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    log_ratio = log_prob - old_log_prob.detach()  # (B,) log p_theta - log p_theta_old, the sampler's logp is data
    ratio = torch.exp(log_ratio)  # (B,)
    unclipped = -advantages * ratio  # (B,)
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)  # (B,)
    loss = torch.maximum(unclipped, clipped).mean()  # ()
    info = {
        "approx_kl": 0.5 * (log_ratio.detach() ** 2).mean(),  # ()
        "clipfrac": ((ratio.detach() - 1.0).abs() > clip_range).float().mean(),  # ()
    }
    return loss, info
