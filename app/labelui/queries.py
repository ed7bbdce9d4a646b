"""Read-only questions the app asks the label store that ``rlhf.store.Store`` has no method for yet.

Each opens its own connection (Streamlit reruns on other threads) with ``query_only`` on, so nothing here
can change a label.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rlhf.store import BUSY_TIMEOUT_MS


@dataclass(frozen=True)
class GalleryImage:
    round_id: int
    path: str
    model_id: str


@dataclass(frozen=True)
class GalleryRow:
    """One prompt and seed drawn in several rounds: the same starting noise before and after training."""

    prompt: str
    seed: int
    images: list[GalleryImage]  # one per round, oldest round first


@contextmanager
def _read(db: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(db)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA query_only = ON")
        yield connection
    finally:
        connection.close()


def current_round(db: Path) -> int | None:
    """The newest round that has pairs queued: the one labellers work on; None before any pair."""
    with _read(db) as connection:
        return connection.execute("SELECT max(round_id) FROM pairs").fetchone()[0]


def gallery(db: Path, limit: int = 12) -> list[GalleryRow]:
    """Prompts and seeds drawn in more than one round, the most recently drawn first, at most ``limit``.

    When a round holds several images of one prompt and seed (several models), the first recorded is used.
    """
    with _read(db) as connection:
        rows = connection.execute(
            "WITH repeated AS (SELECT prompt_id, seed FROM images WHERE seed IS NOT NULL "
            "                  GROUP BY prompt_id, seed HAVING count(DISTINCT round_id) > 1 "
            "                  ORDER BY max(id) DESC LIMIT ?), "
            "first_per_round AS (SELECT min(i.id) AS id FROM images i "
            "                    JOIN repeated r ON r.prompt_id = i.prompt_id AND r.seed = i.seed "
            "                    GROUP BY i.prompt_id, i.seed, i.round_id) "
            "SELECT p.text, i.seed, i.round_id, i.path, i.model_id, "
            "       (SELECT max(id) FROM images j WHERE j.prompt_id = i.prompt_id AND j.seed = i.seed) AS newest "
            "FROM images i JOIN first_per_round f ON f.id = i.id JOIN prompts p ON p.id = i.prompt_id "
            "ORDER BY newest DESC, i.round_id", [limit]).fetchall()
    out: list[GalleryRow] = []
    for prompt, seed, round_id, path, model_id, _ in rows:
        if not out or (out[-1].prompt, out[-1].seed) != (prompt, seed):
            out.append(GalleryRow(prompt, seed, []))
        out[-1].images.append(GalleryImage(round_id, path, model_id))
    return out
