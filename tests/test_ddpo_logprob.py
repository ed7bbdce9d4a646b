import pytest
import torch
from diffusers import DDIMScheduler

from rlhf.ddpo.logprob import ddim_step, gaussian_kl
from rlhf.toy.train_pipeline import SCHEDULER_CONFIG as SD15

SHAPE = (2, 4, 8, 8)


def scheduler(steps: int, **overrides) -> DDIMScheduler:
    s = DDIMScheduler(**{**SD15, **overrides})
    s.set_timesteps(steps)
    return s


def tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(SHAPE, generator=g) for _ in range(3))  # model_output, sample, noise


def diffusers_mean_std(s: DDIMScheduler, out: torch.Tensor, t: int, x: torch.Tensor, eta: float):
    """The step's Gaussian, from diffusers alone: mean = the step with zero noise, std = eta * sqrt(variance)."""
    mean = s.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
    prev_t = t - s.config.num_train_timesteps // s.num_inference_steps
    return mean, eta * s._get_variance(t, prev_t) ** 0.5


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("index", [0, "middle", -1])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_prev_sample_matches_diffusers_step_sd15_config(steps, index, eta):
    s = scheduler(steps)
    t = s.timesteps[steps // 2 if index == "middle" else index]
    out, x, noise = tensors()
    expected = s.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
    prev = ddim_step(s, out, t, x, eta, variance_noise=noise).prev_sample
    torch.testing.assert_close(prev, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(prediction_type="v_prediction"),
        dict(prediction_type="sample"),
        dict(clip_sample=True, clip_sample_range=0.5),
        dict(thresholding=True, sample_max_value=1.5),
        dict(set_alpha_to_one=True, steps_offset=0),
    ],
)
def test_prev_sample_matches_diffusers_step_other_configs(overrides):
    s = scheduler(10, **overrides)
    out, x, noise = tensors()
    for t in s.timesteps[:-1]:  # with set_alpha_to_one the last step has std 0 (tested below)
        expected = s.step(out, t, x, eta=1.0, variance_noise=noise).prev_sample
        prev = ddim_step(s, out, t, x, 1.0, variance_noise=noise).prev_sample
        torch.testing.assert_close(prev, expected, atol=1e-6, rtol=0)


def test_prev_sample_matches_diffusers_step_same_generator_seed():
    s = scheduler(10)
    out, x, _ = tensors()
    t = s.timesteps[3]
    expected = s.step(out, t, x, eta=1.0, generator=torch.Generator().manual_seed(7)).prev_sample
    prev = ddim_step(s, out, t, x, 1.0, generator=torch.Generator().manual_seed(7)).prev_sample
    torch.testing.assert_close(prev, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("index", [0, 5, -1])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_log_prob_equals_torch_normal_given_prev_sample(index, eta):
    s = scheduler(10)
    t = int(s.timesteps[index])
    out, x, noise = tensors(1)
    mean, std = diffusers_mean_std(s, out, t, x, eta)
    prev = mean + std * noise
    expected = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
    step = ddim_step(s, out, t, x, eta, prev_sample=prev)
    torch.testing.assert_close(step.log_prob, expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(step.mean, mean, atol=1e-6, rtol=0)
    assert step.log_prob.shape == (SHAPE[0],) and torch.equal(step.prev_sample, prev)


def test_log_prob_of_own_draw_equals_rescoring_it():
    s = scheduler(10)
    out, x, _ = tensors(2)
    t = s.timesteps[4]
    drawn = ddim_step(s, out, t, x, 1.0, generator=torch.Generator().manual_seed(3))
    prev, log_prob = drawn.prev_sample, drawn.log_prob
    rescored = ddim_step(s, out, t, x, 1.0, prev_sample=prev).log_prob
    assert torch.equal(log_prob, rescored)


def test_batched_timesteps_match_per_sample_scalar_calls():
    s = scheduler(50)
    batch = 4
    g = torch.Generator().manual_seed(4)
    out, x, noise = (torch.randn(batch, 4, 8, 8, generator=g) for _ in range(3))
    t = s.timesteps[torch.tensor([0, 17, 33, 49])]  # (B,) first, middle and last steps
    step = ddim_step(s, out, t, x, 1.0, variance_noise=noise)
    for i in range(batch):
        one = ddim_step(s, out[i : i + 1], int(t[i]), x[i : i + 1], 1.0, variance_noise=noise[i : i + 1])
        torch.testing.assert_close(step.prev_sample[i : i + 1], one.prev_sample, atol=0, rtol=0)
        torch.testing.assert_close(step.log_prob[i : i + 1], one.log_prob, atol=0, rtol=0)
        torch.testing.assert_close(step.std[i : i + 1], one.std, atol=0, rtol=0)


def test_half_precision_input_gives_float32_log_prob_and_half_sample():
    s = scheduler(10)
    out, x, noise = (v.half() for v in tensors(5))
    step = ddim_step(s, out, s.timesteps[2], x, 1.0, variance_noise=noise)
    assert step.prev_sample.dtype == torch.float16 and step.log_prob.dtype == torch.float32
    assert torch.isfinite(step.log_prob).all()


def test_gradient_flows_through_mean_not_prev_sample():
    s = scheduler(10)
    out, x, _ = tensors(6)
    out.requires_grad_(True)
    prev = x.clone().requires_grad_(True)
    ddim_step(s, out, s.timesteps[2], x, 1.0, prev_sample=prev).log_prob.sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0 and prev.grad is None


@pytest.mark.parametrize("eta", [0.0, -0.5])
def test_eta_not_positive_raises_value_error(eta):
    s = scheduler(10)
    out, x, _ = tensors()
    with pytest.raises(ValueError, match=r"eta=.*pass eta > 0") as e:
        ddim_step(s, out, s.timesteps[0], x, eta)
    assert "\n" not in str(e.value)


def test_final_step_to_alpha_one_raises_value_error():
    s = scheduler(10, set_alpha_to_one=True, steps_offset=0)
    out, x, _ = tensors()
    with pytest.raises(ValueError, match=r"timestep\(s\) \[0\].*set_alpha_to_one=False"):
        ddim_step(s, out, s.timesteps[-1], x, 1.0)


def test_unset_timesteps_raises_value_error():
    out, x, _ = tensors()
    with pytest.raises(ValueError, match=r"set_timesteps"):
        ddim_step(DDIMScheduler(**SD15), out, 981, x, 1.0)


def test_timestep_count_not_matching_batch_raises_value_error():
    s = scheduler(10)
    out, x, _ = tensors()
    with pytest.raises(ValueError, match=r"timestep has 3 entries for a batch of 2"):
        ddim_step(s, out, s.timesteps[:3], x, 1.0)


def test_prev_sample_with_noise_source_raises_value_error():
    s = scheduler(10)
    out, x, noise = tensors()
    with pytest.raises(ValueError, match=r"prev_sample was given"):
        ddim_step(s, out, s.timesteps[0], x, 1.0, prev_sample=x, variance_noise=noise)


def test_gaussian_kl_equals_torch_kl_divergence():
    g = torch.Generator().manual_seed(8)
    mean_p, mean_q = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    std = torch.tensor([0.3, 0.05]).view(2, 1, 1, 1)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean_p, std), torch.distributions.Normal(mean_q, std.expand(SHAPE))
    ).mean(dim=(1, 2, 3))
    torch.testing.assert_close(gaussian_kl(mean_p, mean_q, std), expected, atol=1e-5, rtol=1e-6)


def test_gaussian_kl_of_two_models_steps_is_zero_only_for_equal_outputs():
    s = scheduler(10)
    out, x, noise = tensors(9)
    t = s.timesteps[5]
    p = ddim_step(s, out, t, x, 1.0, variance_noise=noise)
    q = ddim_step(s, out + 0.1, t, x, 1.0, variance_noise=noise)
    assert torch.equal(gaussian_kl(p.mean, p.mean, p.std), torch.zeros(SHAPE[0]))
    assert (gaussian_kl(p.mean, q.mean, p.std) > 0).all()


def test_log_prob_of_own_draw_exceeds_far_away_sample():
    s = scheduler(10)
    out, x, _ = tensors(10)
    t = s.timesteps[5]
    step = ddim_step(s, out, t, x, 1.0, generator=torch.Generator().manual_seed(11))
    far = ddim_step(s, out, t, x, 1.0, prev_sample=step.prev_sample + 3 * step.std)
    assert (step.log_prob > far.log_prob).all()
    # A draw's average log-density per dimension is -log(std) - 0.5 * log(2 pi) - 0.5, up to sampling noise.
    expected = -torch.log(step.std).flatten() - 0.5 * torch.log(torch.tensor(2 * torch.pi)) - 0.5
    torch.testing.assert_close(step.log_prob, expected.expand(SHAPE[0]), atol=0.15, rtol=0)
