"""The direct preference losses: Diffusion-DPO's (Wallace et al. 2023, Eq. 14), DPO with the denoising error as the
implicit reward, and D3PO's (Yang et al. 2023, Eq. 11), DPO over the log-probabilities of one denoising step.

For a pair of one prompt, winner x^w and loser x^l, noised with one shared timestep t and noise eps, let err be the
per-sample mean squared error of a model's prediction against the scheduler's target (eps, or v), under the policy
theta and the frozen reference (the starting model). Then

    loss = -log sigmoid(-beta / 2 * ((err_w - err_ref_w) - (err_l - err_ref_l)))

falls when the policy denoises the winner better, relative to the reference, than it denoises the loser. At the
start (policy = reference) the argument is 0: the loss is log 2 and its gradient is beta / 4 * grad(err_w - err_l).
diffusers' ``train_diffusion_dpo.py`` writes the same loss without the 1/2, so its ``--beta_dpo 2500`` is beta 5000.

D3PO treats each step x_t -> x_{t-1} of the winner's and the loser's sampled trajectories as the DPO "response":

    loss = -log sigmoid(beta * (clip(log pi(w_t) - log ref(w_t)) - clip(log pi(l_t) - log ref(l_t))))

with each log-ratio clipped to [log(1 - eps), log(1 + eps)] as the authors' code clips the ratio itself (their
Eq. 11 with a PPO-style trust region; a clipped ratio passes no gradient).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def diffusion_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                       beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss over pairs, all inputs (B,); diagnostics: ``implicit_acc``, the share of pairs whose winner
    the policy already favours (ties count half), and the mean errors."""
    _check_shapes("errors", err_w, err_l, ref_err_w, ref_err_l)
    margin = (ref_err_w.detach() - err_w) - (ref_err_l.detach() - err_l)  # (B,) > 0: winner's error fell more
    loss = -F.logsigmoid(beta / 2 * margin).mean()  # ()
    info = {
        "implicit_acc": ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().detach(),
        "err/policy": 0.5 * (err_w + err_l).mean().detach(),
        "err/reference": 0.5 * (ref_err_w + ref_err_l).mean().detach(),
    }
    return loss, info


def d3po_loss(log_prob_w: torch.Tensor, log_prob_l: torch.Tensor, ref_log_prob_w: torch.Tensor,
              ref_log_prob_l: torch.Tensor, beta: float, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss over (pair, step) rows, all inputs (N,): the step's log-probabilities under the policy and the
    reference; diagnostics: ``implicit_acc`` (ties count half) and ``clipped``, the share of clipped log-ratios."""
    _check_shapes("log-probabilities", log_prob_w, log_prob_l, ref_log_prob_w, ref_log_prob_l)
    low, high = math.log1p(-clip_range), math.log1p(clip_range)
    ratio_w, ratio_l = log_prob_w - ref_log_prob_w.detach(), log_prob_l - ref_log_prob_l.detach()  # (N,) each
    margin = ratio_w.clamp(low, high) - ratio_l.clamp(low, high)  # (N,)
    loss = -F.logsigmoid(beta * margin).mean()  # ()
    clipped = torch.cat([ratio_w, ratio_l]).detach()
    info = {
        "implicit_acc": ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().detach(),
        "clipped": ((clipped < low) | (clipped > high)).float().mean(),
        "log_ratio/winner": ratio_w.mean().detach(),
        "log_ratio/loser": ratio_l.mean().detach(),
    }
    return loss, info


def _check_shapes(what: str, *tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"{what} must all be one value per pair, (B,); got shapes {sorted(shapes)}")
