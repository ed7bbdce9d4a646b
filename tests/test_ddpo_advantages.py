import json

import numpy as np
import pytest
import torch

from rlhf.ddpo.advantages import PerPromptStatTracker, StateBaselineFit, clip_advantages, state_baseline


def test_each_prompt_normalised_to_mean_zero_std_one():
    rng = np.random.default_rng(0)
    prompts = ["cat", "dog"] * 8
    rewards = np.where(np.array(prompts) == "cat", 10.0, -5.0) + rng.normal(size=16) * np.where(
        np.array(prompts) == "cat", 3.0, 0.1
    )
    advantages = PerPromptStatTracker(buffer_size=16, min_count=4).update(prompts, rewards)
    for prompt in ("cat", "dog"):
        a = advantages[np.array(prompts) == prompt]
        assert a.mean() == pytest.approx(0.0, abs=1e-9)
        assert a.std() == pytest.approx(1.0, abs=1e-4)


def test_prompt_below_min_count_uses_batch_stats():
    tracker = PerPromptStatTracker(buffer_size=8, min_count=3)
    prompts = ["cat", "cat", "cat", "dog", "dog"]  # dog has 2 < 3 rewards
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    advantages = tracker.update(prompts, rewards)
    np.testing.assert_allclose(advantages[3:], (rewards[3:] - rewards.mean()) / (rewards.std() + 1e-6))
    np.testing.assert_allclose(advantages[:3], (rewards[:3] - 2.0) / (np.std([1.0, 2.0, 3.0]) + 1e-6))


def test_prompt_reaching_min_count_switches_to_own_stats():
    tracker = PerPromptStatTracker(buffer_size=8, min_count=3)
    tracker.update(["dog", "dog", "cat"], np.array([10.0, 20.0, 0.0]))
    advantages = tracker.update(["dog", "cat"], np.array([30.0, 100.0]))
    assert advantages[0] == pytest.approx((30.0 - 20.0) / (np.std([10.0, 20.0, 30.0]) + 1e-6))


def test_buffer_keeps_only_last_buffer_size_rewards():
    tracker = PerPromptStatTracker(buffer_size=3, min_count=1)
    tracker.update(["cat"] * 5, np.array([100.0, 200.0, 1.0, 2.0, 3.0]))
    advantages = tracker.update(["cat"], np.array([4.0]))
    assert tracker.stats()["cat"] == {"mean": 3.0, "std": pytest.approx(np.std([2.0, 3.0, 4.0])), "count": 3}
    assert advantages[0] == pytest.approx((4.0 - 3.0) / (np.std([2.0, 3.0, 4.0]) + 1e-6))


def test_state_dict_round_trip_through_json_gives_identical_advantages():
    rng = np.random.default_rng(1)
    prompts = ["a", "b", "c", "a", "b", "a"]
    original = PerPromptStatTracker(buffer_size=4, min_count=2)
    original.update(prompts, rng.normal(size=6).astype(np.float32))
    restored = PerPromptStatTracker(buffer_size=4, min_count=2)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    for _ in range(3):
        rewards = rng.normal(size=6)
        np.testing.assert_array_equal(original.update(prompts, rewards), restored.update(prompts, rewards))
    assert original.state_dict() == restored.state_dict()


def test_load_state_dict_with_other_settings_raises_value_error():
    state = PerPromptStatTracker(buffer_size=4, min_count=2).state_dict()
    with pytest.raises(ValueError, match=r"checkpoint has buffer_size, min_count = \(4, 2\)"):
        PerPromptStatTracker(buffer_size=8, min_count=2).load_state_dict(state)


@pytest.mark.parametrize("buffer_size, min_count", [(0, 1), (4, 5), (4, 0)])
def test_bad_settings_raise_value_error(buffer_size, min_count):
    with pytest.raises(ValueError, match=r"(buffer_size|min_count)="):
        PerPromptStatTracker(buffer_size, min_count)


def test_update_with_mismatched_lengths_raises_value_error():
    with pytest.raises(ValueError, match=r"got 2 prompts and rewards of shape \(3,\)"):
        PerPromptStatTracker(4, 2).update(["a", "b"], np.zeros(3))


def test_clip_advantages_clamps_numpy_and_torch():
    values = [-7.0, -2.0, 0.0, 3.0, 9.0]
    np.testing.assert_array_equal(clip_advantages(np.array(values), 5.0), [-5.0, -2.0, 0.0, 3.0, 5.0])
    assert torch.equal(clip_advantages(torch.tensor(values), 2.5), torch.tensor([-2.5, -2.0, 0.0, 2.5, 2.5]))


def test_clip_advantages_non_positive_limit_raises_value_error():
    with pytest.raises(ValueError, match=r"limit=0"):
        clip_advantages(np.zeros(2), 0)


def test_state_baseline_against_a_hand_computation():
    rewards = np.array([1.0, 3.0, 10.0, 14.0])  # groups a, a, b, b: centred -1, 1, -2, 2
    values = np.array([[0.0, 5.0], [1.0, 5.0], [0.0, 7.0], [4.0, 7.0]])  # step 0 centred -0.5, 0.5, -2, 2; step 1 constant
    baseline, removed = state_baseline(rewards, values, ["a", "a", "b", "b"])
    beta = (0.5 + 0.5 + 4 + 4) / (0.25 + 0.25 + 4 + 4)  # sum(r v) / sum(v v)
    np.testing.assert_allclose(baseline[:, 0], beta * np.array([-0.5, 0.5, -2.0, 2.0]))
    np.testing.assert_allclose(baseline[:, 1], 0.0)  # a step whose values do not vary within a group does nothing
    residual = np.array([-1.0, 1.0, -2.0, 2.0]) - baseline[:, 0]
    assert removed[0] == pytest.approx(1 - (residual**2).sum() / 10.0) and removed[1] == pytest.approx(0.0)


def test_state_baseline_that_predicts_the_reward_leaves_zero_advantage_and_never_adds_variance():
    rng = np.random.default_rng(0)
    prompts = ["a", "b"] * 16
    rewards = rng.normal(size=32) + np.where(np.array(prompts) == "a", 5.0, -5.0)
    values = np.stack([rng.normal(size=32), 2 * rewards + 3, rewards + rng.normal(size=32) * 0.1], axis=1)  # (N, 3)
    baseline, removed = state_baseline(rewards, values, prompts)
    advantages = PerPromptStatTracker(buffer_size=16, min_count=16).update(prompts, rewards, baseline)
    assert advantages.shape == (32, 3)
    np.testing.assert_allclose(advantages[:, 1], 0.0, atol=1e-9)  # exact (affine) prediction: nothing left
    assert removed[1] == pytest.approx(1.0) and 0 <= removed[0] < removed[2] < 1
    plain = PerPromptStatTracker(buffer_size=16, min_count=16).update(prompts, rewards)
    assert (advantages[:, 2] ** 2).mean() < 0.1 * (plain**2).mean() and (advantages[:, 0] ** 2).mean() <= (plain**2).mean()


def test_history_fit_uses_the_first_batch_on_itself_then_only_earlier_batches_slopes():
    fit = StateBaselineFit(buffer_size=4)
    first_r, first_v = np.array([1.0, 3.0, 10.0, 14.0]), np.array([[0.0], [1.0], [0.0], [4.0]])
    groups = ["a", "a", "b", "b"]
    baseline, _ = fit(first_r, first_v, groups)
    np.testing.assert_allclose(baseline, state_baseline(first_r, first_v, groups)[0])
    beta = (0.5 + 0.5 + 4 + 4) / (0.25 + 0.25 + 4 + 4)  # first batch: centred r -1, 1, -2, 2 on v -0.5, 0.5, -2, 2
    second_r, second_v = np.array([0.0, 2.0]), np.array([[5.0], [1.0]])  # centred r -1, 1 on v 2, -2: slope -0.5
    baseline, removed = fit(second_r, second_v, ["c", "c"])
    np.testing.assert_allclose(baseline[:, 0], beta * np.array([2.0, -2.0]))  # the first batch's slope, not -0.5
    assert removed[0] < 0  # a slope that has moved adds variance, which a same-batch fit never does
    third, _ = fit(np.array([0.0, 1.0]), np.array([[0.0], [1.0]]), ["d", "d"])
    kept_r, kept_v = np.array([-2.0, 2.0, -1.0, 1.0]), np.array([-2.0, 2.0, 2.0, -2.0])  # the last 4 samples
    np.testing.assert_allclose(third[:, 0], (kept_r @ kept_v) / (kept_v @ kept_v) * np.array([-0.5, 0.5]))


def test_history_fit_state_round_trips_and_refuses_another_size():
    rng = np.random.default_rng(0)
    fit = StateBaselineFit(buffer_size=6)
    fit(rng.normal(size=4), rng.normal(size=(4, 3)), ["a", "a", "b", "b"])
    restored = StateBaselineFit(buffer_size=6)
    restored.load_state_dict(fit.state_dict())
    r, v = rng.normal(size=4), rng.normal(size=(4, 3))
    np.testing.assert_array_equal(fit(r, v, ["a"] * 4)[0], restored(r, v, ["a"] * 4)[0])
    with pytest.raises(ValueError, match="x0_baseline_history"):
        StateBaselineFit(buffer_size=5).load_state_dict(fit.state_dict())
