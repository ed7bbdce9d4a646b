"""The statistics of the evaluation table: cosine similarity, paired bootstrap intervals and paired win rates.

Every model is drawn on the same (prompt, seed) units, so each resample of units is applied to every model at once:
an interval on a model's mean and one on its change against the base are read off the same resamples
(Efron and Tibshirani 1993, percentile intervals).
"""
from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays, (N,)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def bootstrap_indices(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples, n) unit indices drawn with replacement; one draw serves every model of a table."""
    if n < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs at least one unit and one resample, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(statistics: np.ndarray) -> tuple[float, float]:
    """The central ``CONFIDENCE`` interval of a statistic's bootstrap distribution."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(statistics, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """Mean of per-unit values with its percentile bootstrap interval over the resamples ``idx``."""
    values = np.asarray(values, np.float64)
    low, high = percentile_interval(values[idx].mean(axis=1))
    return {"mean": float(values.mean()), "low": low, "high": high, "n": len(values)}


def win_outcomes(tuned: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per unit: 1 where the tuned model scores above the base, 0.5 on a tie, 0 below."""
    tuned, base = np.asarray(tuned, np.float64), np.asarray(base, np.float64)
    return (tuned > base) + 0.5 * (tuned == base)


def paired_comparison(tuned: np.ndarray, base: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """The tuned model against the base on the same units: win rate (ties count half) and mean change, each with
    its paired bootstrap interval."""
    wins = mean_interval(win_outcomes(tuned, base), idx)
    change = mean_interval(np.asarray(tuned, np.float64) - np.asarray(base, np.float64), idx)
    return {"win_rate": wins["mean"], "win_low": wins["low"], "win_high": wins["high"],
            "delta": change["mean"], "delta_low": change["low"], "delta_high": change["high"]}
