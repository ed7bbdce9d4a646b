import math

import pytest
import torch

from rlhf.ddpo.loss import policy_loss, score_function_loss


def test_policy_loss_value_matches_hand_computation():
    log_ratio = torch.tensor([math.log(1.5), math.log(0.5), math.log(1.05), 0.0])
    old = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    advantages = torch.tensor([2.0, 1.0, -1.0, 3.0])
    loss, _ = policy_loss(old + log_ratio, old, advantages, clip_range=0.2)
    # per sample max(-A r, -A clamp(r, 0.8, 1.2)):
    #   A=2, r=1.5  -> max(-3.0, -2.4) = -2.4   (clipped)
    #   A=1, r=0.5  -> max(-0.5, -0.8) = -0.5   (unclipped)
    #   A=-1, r=1.05 -> max(1.05, 1.05) = 1.05  (inside the range)
    #   A=3, r=1    -> -3.0
    assert loss.item() == pytest.approx((-2.4 - 0.5 + 1.05 - 3.0) / 4, abs=1e-6)


def test_score_function_loss_value_matches_hand_computation():
    loss = score_function_loss(torch.tensor([-1.0, -2.0, 0.5]), torch.tensor([2.0, -1.0, 4.0]))
    assert loss.item() == pytest.approx(-(2.0 * -1.0 + -1.0 * -2.0 + 4.0 * 0.5) / 3)


def test_is_gradient_equals_sf_gradient_at_ratio_one():
    old = torch.tensor([-1.0, -0.3, -2.5, 0.7])
    advantages = torch.tensor([1.5, -0.5, 2.0, -3.0])
    log_prob_is = old.clone().requires_grad_(True)
    log_prob_sf = old.clone().requires_grad_(True)
    policy_loss(log_prob_is, old, advantages, clip_range=1e-4)[0].backward()
    score_function_loss(log_prob_sf, advantages).backward()
    torch.testing.assert_close(log_prob_is.grad, log_prob_sf.grad, atol=1e-7, rtol=0)
    torch.testing.assert_close(log_prob_sf.grad, -advantages / 4)


@pytest.mark.parametrize(
    "ratio, advantage, zero",
    [
        (1.5, 1.0, True),  # A > 0, ratio > 1 + c: the clip binds
        (0.5, -1.0, True),  # A < 0, ratio < 1 - c: the clip binds
        (0.5, 1.0, False),  # A > 0, ratio < 1 - c: the unclipped term is the larger, still pushed up
        (1.5, -1.0, False),  # A < 0, ratio > 1 + c: likewise pushed down
        (1.1, 1.0, False),  # inside the range
    ],
)
def test_gradient_is_zero_only_where_clip_binds(ratio, advantage, zero):
    log_prob = torch.tensor([math.log(ratio)], requires_grad=True)
    policy_loss(log_prob, torch.zeros(1), torch.tensor([advantage]), clip_range=0.2)[0].backward()
    if zero:
        assert log_prob.grad.item() == 0.0
    else:
        assert log_prob.grad.item() == pytest.approx(-advantage * ratio)


def test_approx_kl_and_clipfrac_match_hand_computation():
    log_ratio = torch.tensor([0.5, -0.1, 0.0, -0.4], requires_grad=True)
    _, info = policy_loss(log_ratio, torch.zeros(4), torch.ones(4), clip_range=0.2)
    assert info["approx_kl"].item() == pytest.approx(0.5 * (0.25 + 0.01 + 0.0 + 0.16) / 4)
    # |exp(lr) - 1| = 0.65, 0.095, 0, 0.33: two of four outside 0.2
    assert info["clipfrac"].item() == pytest.approx(0.5)
    assert not info["approx_kl"].requires_grad and not info["clipfrac"].requires_grad


def test_old_log_prob_gets_no_gradient():
    old = torch.tensor([-1.0, -2.0], requires_grad=True)
    log_prob = torch.tensor([-0.9, -2.1], requires_grad=True)
    policy_loss(log_prob, old, torch.tensor([1.0, -1.0]), clip_range=0.2)[0].backward()
    assert old.grad is None and log_prob.grad is not None


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError, match=r"shapes differ.*advantages': \(3, 1\)"):
        policy_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3, 1), clip_range=0.2)
    with pytest.raises(ValueError, match=r"shapes differ"):
        score_function_loss(torch.zeros(3), torch.zeros(2))


@pytest.mark.parametrize("clip_range", [0.0, -0.1])
def test_clip_range_not_positive_raises_value_error(clip_range):
    with pytest.raises(ValueError, match=r"clip_range=.* must be > 0"):
        policy_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), clip_range=clip_range)
