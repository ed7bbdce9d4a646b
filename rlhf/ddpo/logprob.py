"""The policy of DDPO: one stochastic sampling step (DDIM, or LCM's multistep consistency sampler) and its exact
Gaussian log-density.

Black et al. 2023 (Sec. 4.3) treat each denoising step as an action of a multi-step MDP whose policy is
pi(a_t | s_t) = p_theta(x_{t-1} | x_t, c), an isotropic Gaussian (their Eq. 2). Sampling with DDIM at eta > 0
(Song et al. 2021, Eq. 12 and 16) gives such a Gaussian, so log p_theta is exact and the policy gradients of
DDPO's Eq. 3 and 4 can be taken through it. The step reproduces `DDIMScheduler.step` so that the images the
reward model scores are the ones diffusers would have drawn. A latent consistency model's multistep sampler
(Luo et al. 2023, Algorithm 1) re-noises each step's consistency prediction with fresh Gaussian noise, so its steps
are Gaussian too (`lcm_step`), all but the last, which returns the prediction itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, LCMScheduler
from diffusers.utils.torch_utils import randn_tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class GaussianStep:
    """One step x_t -> x_{t-1} ~ N(mean, std^2 I).

    `mean` and `std` are kept so that a KL penalty to a reference model (`gaussian_kl`) can reuse them, and
    `x0_pred` so that the reward of the step's predicted image can serve as a baseline (`state_baseline`).
    """

    prev_sample: torch.Tensor  # (B, C, H, W) x_{t-1}, in the dtype of `sample`
    log_prob: torch.Tensor  # (B,) log N(x_{t-1}; mean, std^2 I) averaged over C, H, W
    mean: torch.Tensor  # (B, C, H, W) mu_theta(x_t, t, c), at least float32
    std: torch.Tensor  # (B or 1, 1, 1, 1) sigma_t(eta), at least float32
    x0_pred: torch.Tensor  # (B, C, H, W) the model's prediction of x_0 from x_t, at least float32


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: half precision loses too much in (x - mean)^2 / std^2."""
    return torch.promote_types(x.dtype, torch.float32)


def _mean_over_non_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the per-dimension average keeps log-ratios and KLs O(1) whatever the latent size."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def ddim_step(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    variance_noise: torch.Tensor | None = None,
) -> GaussianStep:
    """Take (or score) one stochastic DDIM step and return its sample, log-density, mean and std.

    With the same noise, `prev_sample` equals `scheduler.step(model_output, t, sample, eta=eta,
    variance_noise=noise).prev_sample` (exactly in float32; half inputs are computed in float32 and cast back).
    `timestep` is a scalar or one timestep per sample (B,), as training replays each sample at its own step.

    Given `prev_sample` (a stored action), nothing is drawn and only its log-density under the current model is
    computed; that log-density is taken at `prev_sample.detach()`, so gradients flow through the mean alone, as
    the score-function gradient grad log p_theta(x_{t-1} | x_t, c) requires. Otherwise x_{t-1} is drawn with
    `variance_noise`, or with fresh noise from `generator` (the same draw diffusers makes).

    log p is averaged, not summed, over C, H, W, as in kvablack/ddpo-pytorch: the importance ratio of Eq. 4 and
    its clip range then do not depend on the latent size.
    """
    if not eta > 0:
        raise ValueError(
            f"eta={eta!r} makes the DDIM step deterministic (std 0), so it has no log-density; "
            "pass eta > 0 (DDPO uses eta=1.0)."
        )
    if scheduler.num_inference_steps is None:
        raise ValueError("scheduler.num_inference_steps is None; call scheduler.set_timesteps(num_steps) first.")
    _check_draw(prev_sample, generator, variance_noise)
    config = scheduler.config
    t = torch.as_tensor(timestep, device=sample.device).long().reshape(-1)  # (B,) or (1,)
    if t.numel() not in (1, sample.shape[0]):
        raise ValueError(
            f"timestep has {t.numel()} entries for a batch of {sample.shape[0]}; pass one timestep or one per sample."
        )
    prev_t = t - config.num_train_timesteps // scheduler.num_inference_steps  # (B,)

    # alpha here is DDIM's alpha (diffusers' alphas_cumprod); below step 0 the chain ends at final_alpha_cumprod.
    alphas_cumprod = scheduler.alphas_cumprod.to(sample.device)  # (T,)
    final_alpha_cumprod = scheduler.final_alpha_cumprod.to(sample.device)  # ()
    alpha_t = alphas_cumprod[t]  # (B,)
    alpha_prev = torch.where(prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)], final_alpha_cumprod)  # (B,)
    variance = ((1 - alpha_prev) / (1 - alpha_t)) * (1 - alpha_t / alpha_prev)  # (B,) DDIM Eq. 16 at eta=1
    sigma_t = eta * variance**0.5  # (B,)
    if not bool((sigma_t > 0).all()):
        raise ValueError(
            f"timestep(s) {t[sigma_t <= 0].tolist()} step to alpha_prev=1 (set_alpha_to_one=True), a deterministic "
            "step with no log-density; use set_alpha_to_one=False (as Stable Diffusion does) or leave that step out "
            "of the policy gradient."
        )

    shape = (-1,) + (1,) * (sample.ndim - 1)
    alpha_t, alpha_prev, sigma_t = alpha_t.view(shape), alpha_prev.view(shape), sigma_t.view(shape)  # (B, 1, 1, 1)
    dtype = _compute_dtype(sample)
    x_t = sample.to(dtype)  # (B, C, H, W)
    output = model_output.to(dtype)  # (B, C, H, W)

    x0_pred, eps_pred = _predict(scheduler, output, x_t, alpha_t)  # (B, C, H, W) each, DDIM Eq. 12 "predicted x_0"
    mean = alpha_prev**0.5 * x0_pred + (1 - alpha_prev - sigma_t**2) ** 0.5 * eps_pred  # (B, C, H, W) DDIM Eq. 12
    return _gaussian_step(mean, sigma_t, x0_pred, sample, model_output, prev_sample, generator, variance_noise)


def _predict(scheduler, output: torch.Tensor, x_t: torch.Tensor, alpha_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted x_0, predicted epsilon) from the model output in the scheduler's parameterisation, with the
    clipping or dynamic thresholding diffusers applies to x_0."""
    config, beta_t = scheduler.config, 1 - alpha_t
    if config.prediction_type == "epsilon":
        x0_pred = (x_t - beta_t**0.5 * output) / alpha_t**0.5
        eps_pred = output
    elif config.prediction_type == "sample":
        x0_pred = output
        eps_pred = (x_t - alpha_t**0.5 * x0_pred) / beta_t**0.5
    elif config.prediction_type == "v_prediction":
        x0_pred = alpha_t**0.5 * x_t - beta_t**0.5 * output
        eps_pred = alpha_t**0.5 * output + beta_t**0.5 * x_t
    else:
        raise ValueError(
            f"scheduler.config.prediction_type={config.prediction_type!r} is not supported; "
            "use 'epsilon', 'v_prediction' or 'sample'."
        )
    if config.thresholding:
        x0_pred = scheduler._threshold_sample(x0_pred)
    elif config.clip_sample:
        x0_pred = x0_pred.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0_pred, eps_pred


def _gaussian_step(mean, std, x0_pred, sample, model_output, prev_sample, generator, variance_noise) -> GaussianStep:
    """Draw x_{t-1} ~ N(mean, std^2 I) unless given, and score it."""
    dtype = mean.dtype
    if prev_sample is None:
        if variance_noise is None:
            variance_noise = randn_tensor(  # the same draw as the diffusers scheduler's step with this generator
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
        prev_sample = (mean + std * variance_noise.to(dtype)).to(sample.dtype)  # (B, C, H, W)

    # Scored at the returned (possibly half-precision) x_{t-1}, so replaying the stored action with unchanged
    # weights gives the same log-prob and an importance ratio of exactly 1.
    x_prev = prev_sample.detach().to(dtype)  # (B, C, H, W)
    log_density = -((x_prev - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI  # (B, C, H, W)
    return GaussianStep(prev_sample=prev_sample, log_prob=_mean_over_non_batch(log_density), mean=mean, std=std,
                        x0_pred=x0_pred)


def _check_draw(prev_sample, generator, variance_noise) -> None:
    if prev_sample is not None and (generator is not None or variance_noise is not None):
        raise ValueError("prev_sample was given, so nothing is drawn; pass generator and variance_noise as None.")
    if generator is not None and variance_noise is not None:
        raise ValueError("Both generator and variance_noise were given; pass only one, each alone fixes the noise.")


def consistency_prediction(scheduler: LCMScheduler, model_output: torch.Tensor, timestep: torch.Tensor,
                           sample: torch.Tensor) -> torch.Tensor:
    """The consistency function's x_0, c_skip(t) x_t + c_out(t) x0_pred (what `LCMScheduler.step` calls
    ``denoised``), in float32 or wider; ``timestep`` is (B,) or (1,)."""
    dtype = _compute_dtype(sample)
    t = timestep.to(sample.device).long()
    shape = (-1,) + (1,) * (sample.ndim - 1)
    alpha_t = scheduler.alphas_cumprod.to(sample.device, dtype)[t].view(shape)  # (B, 1, 1, 1)
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t.to(dtype).view(shape))
    x_t = sample.to(dtype)
    x0_pred, _ = _predict(scheduler, model_output.to(dtype), x_t, alpha_t)
    return c_out * x0_pred + c_skip * x_t  # (B, C, H, W)


def lcm_step(
    scheduler: LCMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    variance_noise: torch.Tensor | None = None,
) -> GaussianStep:
    """One stochastic step of the multistep consistency sampler: x_{s} ~ N(sqrt(a_s) f(x_t, t), (1 - a_s) I), with
    f the consistency prediction and s the next timestep of ``scheduler.timesteps``.

    With the same noise, `prev_sample` equals `LCMScheduler.step`'s (exactly in float32). The schedule's last
    timestep returns f itself, a deterministic step with no log-density: it is refused here, and the sampler
    takes it with `consistency_prediction`. Arguments as in `ddim_step`; there is no eta, the re-noising is the
    sampler's own.
    """
    if scheduler.num_inference_steps is None:
        raise ValueError("scheduler.num_inference_steps is None; call scheduler.set_timesteps(num_steps) first.")
    _check_draw(prev_sample, generator, variance_noise)
    t = torch.as_tensor(timestep, device=sample.device).long().reshape(-1)  # (B,) or (1,)
    if t.numel() not in (1, sample.shape[0]):
        raise ValueError(
            f"timestep has {t.numel()} entries for a batch of {sample.shape[0]}; pass one timestep or one per sample."
        )
    schedule = scheduler.timesteps.to(sample.device)  # (T,) descending
    index = (schedule[None, :] == t[:, None]).long().argmax(dim=1)  # (B,)
    if not bool((schedule[index] == t).all()) or bool((index == len(schedule) - 1).any()):
        raise ValueError(
            f"timestep(s) {t.tolist()} must be in the schedule {schedule.tolist()} and not its last, which returns the "
            "consistency prediction deterministically (no log-density); take that step with consistency_prediction."
        )
    denoised = consistency_prediction(scheduler, model_output, t, sample)  # (B, C, H, W)
    shape = (-1,) + (1,) * (sample.ndim - 1)
    alpha_prev = scheduler.alphas_cumprod.to(sample.device, denoised.dtype)[schedule[index + 1]].view(shape)  # (B, 1, 1, 1)
    mean, std = alpha_prev**0.5 * denoised, (1 - alpha_prev) ** 0.5
    return _gaussian_step(mean, std, denoised, sample, model_output, prev_sample, generator, variance_noise)


def gaussian_kl(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """KL(N(mean_p, std^2 I) || N(mean_q, std^2 I)) per sample, (B,), averaged over non-batch dims like log_prob.

    The fine-tuned and the reference model share sigma_t at a given step (it depends only on the schedule and
    eta), so the KL reduces to the closed form (mean_p - mean_q)^2 / (2 std^2) per dimension; summed over the
    steps of a trajectory it is the KL between the two samplers' trajectory distributions (chain rule).
    """
    dtype = _compute_dtype(mean_p)
    std = torch.as_tensor(std, dtype=dtype, device=mean_p.device)  # (B or 1, 1, 1, 1) or ()
    kl = (mean_p.to(dtype) - mean_q.to(dtype)) ** 2 / (2 * std**2)  # (B, C, H, W)
    return _mean_over_non_batch(kl)
