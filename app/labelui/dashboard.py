"""Tables and curves for the Dashboard page, as pure functions of the store's labels and the run folder.

``rounds.json`` in the run folder (beside the label store) holds what each finished round measured, with
metric names under prefixes (``rm/`` reward model, ``reward/`` DDPO reward, ``judge/`` held-out judge)::

    {"rounds": [{"round": 1, "rm/accuracy": 0.64, "rm/accuracy_with_ties": 0.60,
                 "reward/mean": [0.11, 0.13, 0.18]}, ...]}

A bare list of round objects works too. A number is a per-round figure; a list of numbers is a curve over
that round's DDPO epochs.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf.store import CHOICES, Label

ROUNDS_FILE = "rounds.json"
METRIC_PREFIXES = ("rm/", "reward/", "judge/")
CHOICE_COLUMNS = {"left": "left", "right": "right", "tie": "tie", "both_bad": "both bad", "skip": "skip"}


class RoundsFileError(Exception):
    """rounds.json exists but is not what the dashboard reads (see the module docstring)."""


def labels_per_round(labels: list[Label]) -> pd.DataFrame:
    """One row per round and labeller: label count, count per choice and median response time."""
    groups: dict[tuple[int, str], list[Label]] = defaultdict(list)
    for label in labels:
        groups[(label.round_id, label.labeller)].append(label)
    rows = []
    for (round_id, labeller), group in sorted(groups.items()):
        times = [label.response_ms for label in group if label.response_ms is not None]
        row: dict[str, Any] = {"round": round_id, "labeller": labeller, "labels": len(group)}
        row |= {CHOICE_COLUMNS[c]: sum(label.choice == c for label in group) for c in CHOICES}
        row["median response (s)"] = round(statistics.median(times) / 1000, 1) if times else None
        rows.append(row)
    columns = ["round", "labeller", "labels", *CHOICE_COLUMNS.values(), "median response (s)"]
    return pd.DataFrame(rows, columns=columns)


def read_rounds(runs: Path) -> list[dict[str, Any]] | None:
    """The round records in ``runs/rounds.json``, oldest first; None when the file does not exist yet."""
    path = runs / ROUNDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RoundsFileError(f"cannot read {path}: {e}") from None
    rounds = data.get("rounds") if isinstance(data, dict) else data
    if not isinstance(rounds, list) or not all(isinstance(r, dict) and isinstance(r.get("round"), int) for r in rounds):
        raise RoundsFileError(f"{path} should hold {{\"rounds\": [{{\"round\": 1, \"rm/accuracy\": ...}}, ...]}}: "
                              "a list of objects, each with an integer 'round'")
    return sorted(rounds, key=lambda r: r["round"])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def round_metrics(rounds: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-round figures (numbers under a metric prefix), indexed by round; empty when there are none."""
    rows = {r["round"]: {k: v for k, v in r.items() if k.startswith(METRIC_PREFIXES) and _is_number(v)}
            for r in rounds}
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("round")
    return frame.reindex(sorted(frame.columns), axis=1)


def reward_curves(rounds: list[dict[str, Any]], metric: str = "reward/mean") -> pd.DataFrame:
    """``metric`` over DDPO epochs, one column per round that logged it as a list; indexed by epoch."""
    curves = {f"round {r['round']}": pd.Series(r[metric], dtype=float) for r in rounds
              if isinstance(r.get(metric), list) and all(_is_number(v) for v in r[metric])}
    return pd.DataFrame(curves).rename_axis("epoch")
