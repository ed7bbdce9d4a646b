"""Diffusion-DPO's loss (Wallace et al. 2023, Eq. 14): DPO with the denoising error as the implicit reward.

For a pair of one prompt, winner x^w and loser x^l, noised with one shared timestep t and noise eps, let err be the
per-sample mean squared error of a model's prediction against the scheduler's target (eps, or v), under the policy
theta and the frozen reference (the starting model). Then

    loss = -log sigmoid(-beta / 2 * ((err_w - err_ref_w) - (err_l - err_ref_l)))

falls when the policy denoises the winner better, relative to the reference, than it denoises the loser. At the
start (policy = reference) the argument is 0: the loss is log 2 and its gradient is beta / 4 * grad(err_w - err_l).
diffusers' ``train_diffusion_dpo.py`` writes the same loss without the 1/2, so its ``--beta_dpo 2500`` is beta 5000.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                       beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss over pairs, all inputs (B,); diagnostics: ``implicit_acc``, the share of pairs whose winner
    the policy already favours (ties count half), and the mean errors."""
    shapes = {tuple(t.shape) for t in (err_w, err_l, ref_err_w, ref_err_l)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"errors must all be one value per pair, (B,); got shapes {sorted(shapes)}")
    margin = (ref_err_w.detach() - err_w) - (ref_err_l.detach() - err_l)  # (B,) > 0: winner's error fell more
    loss = -F.logsigmoid(beta / 2 * margin).mean()  # ()
    info = {
        "implicit_acc": ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().detach(),
        "err/policy": 0.5 * (err_w + err_l).mean().detach(),
        "err/reference": 0.5 * (ref_err_w + ref_err_l).mean().detach(),
    }
    return loss, info
