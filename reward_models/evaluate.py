"""Held-out evaluation of a pairwise reward model, grouped by prompt.

Pairs of one prompt share most of their content, so a random split would leak each prompt into both sides;
``GroupKFold`` by prompt measures what a new prompt gets. How ties count moves reported accuracy by several
points, so both are reported:

- ``accuracy``: decisive labels only (ties dropped, as ImageReward and D3PO do); a pair the model scores
  exactly equal earns half credit.
- ``accuracy_with_ties``: every label, each earning ``target`` if the model prefers a and ``1 - target`` if it
  prefers b, i.e. agreement with a labeller who breaks ties by a coin flip: a tie earns 0.5 whatever the model
  says, so this figure sits between chance and ``accuracy``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.model_selection import GroupKFold

Scorer = Callable[[np.ndarray], np.ndarray]  # features -> scores
Fit = Callable[[np.ndarray, np.ndarray, np.ndarray], Scorer]  # (features_a, features_b, targets) -> scorer


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def calibration_bins(diff: np.ndarray, targets: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability table over confidence in [0.5, 1]: each pair is folded so the model's favourite is 'a'."""
    p, t = _sigmoid(np.asarray(diff, np.float64)), np.asarray(targets, np.float64)
    flip = p < 0.5
    p, t = np.where(flip, 1 - p, p), np.where(flip, 1 - t, t)
    edges = np.linspace(0.5, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int((which == b).sum()),
             "confidence": float(p[which == b].mean()) if (which == b).any() else float("nan"),
             "observed": float(t[which == b].mean()) if (which == b).any() else float("nan")} for b in range(bins)]


def pair_metrics(score_a: np.ndarray, score_b: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Accuracy (decisive), accuracy with ties, log-loss and expected calibration error of P(a) = sigmoid(a - b)."""
    d = np.asarray(score_a, np.float64) - np.asarray(score_b, np.float64)
    t = np.asarray(targets, np.float64)
    prefers_a = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    credit = prefers_a * t + (1 - prefers_a) * (1 - t)
    decisive = t != 0.5
    p = np.clip(_sigmoid(d), 1e-12, 1 - 1e-12)
    table = calibration_bins(d, t, bins)
    return {
        "accuracy": float(credit[decisive].mean()) if decisive.any() else float("nan"),
        "accuracy_with_ties": float(credit.mean()),
        "log_loss": float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()),
        "ece": float(sum(r["n"] * abs(r["confidence"] - r["observed"]) for r in table if r["n"]) / len(t)),
        "pairs": int(len(t)),
        "ties": int((~decisive).sum()),
    }


def cross_validate(features_a: np.ndarray, features_b: np.ndarray, targets: np.ndarray, groups: Sequence,
                   fit: Fit, n_splits: int = 5) -> tuple[dict[str, float], np.ndarray]:
    """Pooled out-of-fold metrics with folds grouped by prompt, and the out-of-fold score differences."""
    diff = np.zeros(len(targets))
    for train, test in GroupKFold(n_splits=n_splits).split(features_a, groups=groups):
        score = fit(features_a[train], features_b[train], targets[train])
        diff[test] = score(features_a[test]) - score(features_b[test])
    return pair_metrics(diff, np.zeros_like(diff), targets), diff


def learning_curve(features_a: np.ndarray, features_b: np.ndarray, targets: np.ndarray, groups: Sequence,
                   fit: Fit, sizes: Sequence[int], n_splits: int = 5, seed: int = 0) -> list[dict[str, float]]:
    """Out-of-fold metrics when each fold trains on only its first ``n`` labels (nested random subsets):
    how many more labels are worth collecting."""
    rng = np.random.default_rng(seed)
    diffs = {n: np.full(len(targets), np.nan) for n in sizes}
    used = {n: [] for n in sizes}
    for train, test in GroupKFold(n_splits=n_splits).split(features_a, groups=groups):
        train = rng.permutation(train)
        for n in sizes:
            sub = train[:n]
            used[n].append(len(sub))
            score = fit(features_a[sub], features_b[sub], targets[sub])
            diffs[n][test] = score(features_a[test]) - score(features_b[test])
    return [{"labels": float(np.mean(used[n])), **pair_metrics(diffs[n], np.zeros(len(targets)), targets)}
            for n in sizes]


def reliability_diagram(diff: np.ndarray, targets: np.ndarray, path: str | Path, bins: int = 10,
                        size: int = 360) -> Path:
    """PNG of observed P(favourite preferred) against the model's confidence per bin (grey bars: pair counts)."""
    table = calibration_bins(diff, targets, bins)
    m = 40  # margin for axis labels
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = m, size - m, size - 10, 10

    def xy(conf: float, obs: float) -> tuple[float, float]:
        return x0 + (conf - 0.5) / 0.5 * (x1 - x0), y0 - obs * (y0 - y1)

    most = max(r["n"] for r in table) or 1
    for r in table:  # histogram of pairs per bin, scaled to the plot height
        if r["n"]:
            draw.rectangle([xy(r["lo"], 0)[0] + 1, y0 - 0.3 * (y0 - y1) * r["n"] / most, xy(r["hi"], 0)[0] - 1, y0],
                           fill=(225, 225, 225))
    draw.line([xy(0.5, 0.5), xy(1, 1)], fill=(150, 150, 150), width=1)  # perfect calibration
    pts = [xy(r["confidence"], r["observed"]) for r in table if r["n"]]
    if len(pts) > 1:
        draw.line(pts, fill=(40, 80, 225), width=2)
    for x, y in pts:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(40, 80, 225))
    draw.rectangle([x0, y1, x1, y0], outline="black")
    for v in (0.5, 0.75, 1.0):
        draw.text((xy(v, 0)[0] - 8, y0 + 4), f"{v:.2f}", fill="black")
    for v in (0.0, 0.5, 1.0):
        draw.text((4, xy(0.5, v)[1] - 6), f"{v:.1f}", fill="black")
    draw.text((x0 + 4, y1 + 4), "observed vs confidence", fill="black")
    ece = pair_metrics(diff, np.zeros_like(diff), targets, bins)["ece"]
    draw.text((x0 + 4, y1 + 18), f"ECE {ece:.3f}", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
