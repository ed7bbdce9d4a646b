import math

import numpy as np
import pytest
import torch

from reward_models.bradley_terry import bt_loss, targets
from reward_models.heads import HeadConfig, fit_head, fit_logistic


def test_bt_loss_matches_hand_computation():
    a, b = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 3.0])
    t = torch.tensor([1.0, 0.5, 0.0])
    # a won by 1: -log sigmoid(1); tie at equal scores: log 2; b won by 2: -log(1 - sigmoid(-2)) = log(1 + e^-2)
    by_hand = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(-2))) / 3
    assert bt_loss(a, b, t).item() == pytest.approx(by_hand, rel=1e-6)


def test_bt_gradient_is_exactly_zero_at_equal_scores_with_a_tie_target():
    a, b = torch.tensor([0.7, -1.3], requires_grad=True), torch.tensor([0.7, -1.3], requires_grad=True)
    bt_loss(a, b, torch.tensor([0.5, 0.5])).backward()
    assert a.grad.abs().max().item() == 0.0 and b.grad.abs().max().item() == 0.0


def test_bt_gradient_pushes_the_winner_up_at_equal_scores():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    bt_loss(a, b, torch.ones(1)).backward()
    assert a.grad.item() < 0 < b.grad.item()  # gradient descent raises a and lowers b


def test_targets_map_choices_and_refuse_non_preferences():
    assert targets(["left", "right", "tie"]).tolist() == [1.0, 0.0, 0.5]
    for choice in ("both_bad", "skip"):
        with pytest.raises(ValueError, match=f"'{choice}' is not a preference"):
            targets(["left", choice])


def _linear_pairs(n: int, w: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs judged by the hidden linear score w . x: winner-decided, and ties where the scores nearly agree."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, len(w))).astype(np.float32), rng.normal(size=(n, len(w))).astype(np.float32)
    d = (a - b) @ w
    return a, b, np.where(np.abs(d) < 0.05, 0.5, (d > 0).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("fit", [lambda a, b, t: fit_head(a, b, t, HeadConfig("linear")),
                                 lambda a, b, t: fit_head(a, b, t, HeadConfig("mlp", batch_size=128, epochs=60)),
                                 lambda a, b, t: fit_logistic(a, b, t)], ids=["linear", "mlp", "logistic"])
def test_heads_learn_a_known_linear_preference_on_synthetic_features(fit):
    w = np.random.default_rng(0).normal(size=8).astype(np.float32)
    head = fit(*_linear_pairs(600, w, seed=1))
    a, b, t = _linear_pairs(2000, w, seed=2)
    with torch.no_grad():
        d = (head(torch.from_numpy(a)) - head(torch.from_numpy(b))).numpy()
    decisive = t != 0.5
    assert ((d > 0) == (t == 1))[decisive].mean() > 0.95


def test_linear_head_recovers_the_direction_of_the_hidden_weights():
    w = np.random.default_rng(0).normal(size=8).astype(np.float32)
    head = fit_head(*_linear_pairs(600, w, seed=1))
    learned = (head.linear.weight[0] * head.scale).numpy()
    assert learned @ w / np.linalg.norm(learned) / np.linalg.norm(w) > 0.98


def test_logistic_baseline_fits_pairs_stored_winner_first():
    w = np.random.default_rng(0).normal(size=8).astype(np.float32)
    a, b, t = _linear_pairs(400, w, seed=1)
    a, b = np.where(t[:, None] == 0, b, a), np.where(t[:, None] == 0, a, b)  # every decisive target becomes 1
    head = fit_logistic(a, b, np.where(t == 0.5, 0.5, 1.0))
    learned = head.linear.weight[0].numpy() * head.scale.numpy()
    assert learned @ w / np.linalg.norm(learned) / np.linalg.norm(w) > 0.98


def test_linear_head_converges_to_the_scikit_learn_baseline_with_the_same_l2():
    rng = np.random.default_rng(3)
    w = rng.normal(size=12).astype(np.float32)
    a, b = rng.normal(size=(500, 12)).astype(np.float32), rng.normal(size=(500, 12)).astype(np.float32)
    p = 1 / (1 + np.exp(-(a - b) @ w))
    t = np.where(rng.random(500) < 0.1, 0.5, (rng.random(500) < p).astype(np.float32)).astype(np.float32)
    torch_w = fit_head(a, b, t, HeadConfig(l2=10.0)).linear.weight[0].numpy()
    sklearn_w = fit_logistic(a, b, t, C=0.1).linear.weight[0].numpy()
    np.testing.assert_allclose(torch_w, sklearn_w, rtol=0.02, atol=0.01 * np.abs(sklearn_w).max())
