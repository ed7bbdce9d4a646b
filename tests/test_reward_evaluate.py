import numpy as np
import pytest
import torch
from PIL import Image

from reward_models.evaluate import calibration_bins, cross_validate, learning_curve, pair_metrics, reliability_diagram
from reward_models.heads import HeadConfig, fit_head


def test_accuracy_drops_ties_and_accuracy_with_ties_gives_them_half_credit():
    a, b = np.array([1.0, 1.0, 1.0, 1.0]), np.zeros(4)
    m = pair_metrics(a, b, np.array([1.0, 0.0, 0.5, 1.0]))
    assert m["accuracy"] == pytest.approx(2 / 3) and m["accuracy_with_ties"] == pytest.approx(2.5 / 4)
    assert m["ties"] == 1 and m["pairs"] == 4


def test_accuracy_gives_half_credit_when_the_model_scores_a_pair_equal():
    assert pair_metrics(np.zeros(2), np.zeros(2), np.array([1.0, 0.0]))["accuracy"] == 0.5


def test_log_loss_matches_hand_computation():
    # P(a) = sigmoid(0) = 0.5 for a decisive pair: log 2
    assert pair_metrics(np.zeros(1), np.zeros(1), np.ones(1))["log_loss"] == pytest.approx(np.log(2))


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = rng.normal(scale=2.0, size=n)
    return d, (rng.random(n) < 1 / (1 + np.exp(-d))).astype(float)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    d, t = _calibrated(20_000, 0)
    assert pair_metrics(d, 0 * d, t)["ece"] < 0.02
    assert pair_metrics(5 * d, 0 * d, t)["ece"] > 0.1


def test_calibration_bins_fold_every_pair_onto_the_favourite():
    table = calibration_bins(np.array([-2.0, 2.0]), np.array([0.0, 1.0]), bins=5)
    assert sum(r["n"] for r in table) == 2 and table[-2]["observed"] == 1.0  # sigmoid(2) = 0.88: bin 0.8-0.9


def test_cross_validation_never_trains_on_a_held_out_prompt():
    groups = np.repeat(np.arange(20), 5)
    features = groups[:, None].astype(np.float32)  # the prompt id, so the fit can see which prompts it got
    leaks = []

    def fit(fa, fb, t):
        seen = set(fa[:, 0].astype(int))

        def score(f):
            leaks.append(bool(seen & set(f[:, 0].astype(int))))
            return np.zeros(len(f))

        return score

    cross_validate(features, features, np.ones(100, np.float32), groups, fit, n_splits=4)
    assert len(leaks) == 8 and not any(leaks)


def _linear_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(0).normal(size=16)
    a, b = rng.normal(size=(n, 16)).astype(np.float32), rng.normal(size=(n, 16)).astype(np.float32)
    t = (rng.random(n) < 1 / (1 + np.exp(-(a - b) @ w))).astype(np.float32)
    return a, b, t, rng.integers(0, n // 4, size=n)


def test_learning_curve_improves_with_more_labels():
    a, b, t, groups = _linear_pairs(500, 1)

    def fit(fa, fb, tt):
        head = fit_head(fa, fb, tt, HeadConfig(epochs=100, lr=3e-2))
        return lambda f: head(torch.from_numpy(f)).numpy()

    curve = learning_curve(a, b, t, groups, fit, sizes=[10, 300], n_splits=5)
    assert [row["labels"] for row in curve] == [10, 300]
    assert curve[0]["accuracy"] + 0.05 < curve[1]["accuracy"]


def test_reliability_diagram_writes_a_png_with_the_points(tmp_path):
    d, t = _calibrated(2000, 0)
    path = reliability_diagram(d, t, tmp_path / "plots" / "reliability.png")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (400, 400, 3)
    assert ((pixels == (31, 119, 180)).all(-1)).sum() > 50  # the calibration curve is drawn (matplotlib's first colour)
