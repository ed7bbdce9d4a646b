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
from sklearn.model_selection import GroupKFold

from rlhf.plot import line_chart

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


def reliability_diagram(diff: np.ndarray, targets: np.ndarray, path: str | Path, bins: int = 10) -> Path:
    """PNG of observed P(favourite preferred) against the model's confidence per bin, with the diagonal of
    perfect calibration and the ECE in the title."""
    table = [r for r in calibration_bins(diff, targets, bins) if r["n"]]
    ece = pair_metrics(diff, np.zeros_like(diff), targets, bins)["ece"]
    return line_chart({"model": ([r["confidence"] for r in table], [r["observed"] for r in table]),
                       "perfect calibration": ([0.5, 1.0], [0.5, 1.0])}, path, size=(4, 4),
                      title=f"Reliability (ECE {ece:.3f})", xlabel="confidence", ylabel="observed")
