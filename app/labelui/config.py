"""Where the app finds its label store and images, read from environment variables."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlhf.paths import RUNS

DB_VAR = "RLHF_DB"
DATA_VAR = "RLHF_DATA"
TOKEN_VAR = "RLHF_APP_TOKEN"
ROUND_COMMAND = "python -m rlhf.round"
"""What starts a round (samples images and queues pairs); the app names it wherever the queue is empty."""


@dataclass(frozen=True)
class AppConfig:
    db: Path
    """The label store (``RLHF_DB``, default ``data/runs/labels.db``)."""
    data: Path
    """The folder image paths in the store are relative to (``RLHF_DATA``). By default the parent of the
    store's folder, as the rounds driver records them: ``data/`` for ``data/runs/labels.db``, ``data/runs/``
    for ``data/runs/demo/labels.db``."""
    token: str | None
    """Access token a visitor must type before seeing anything (``RLHF_APP_TOKEN``); None: no gate."""

    @property
    def runs(self) -> Path:
        """The run folder: the store's folder, where rounds also leave ``rounds.json``."""
        return self.db.parent

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AppConfig:
        """Read the settings; relative paths are taken from the current folder, empty values count as unset."""
        db = Path(environ.get(DB_VAR) or RUNS / "labels.db").absolute()
        data = Path(environ[DATA_VAR]).absolute() if environ.get(DATA_VAR) else db.parent.parent
        return cls(db=db, data=data, token=environ.get(TOKEN_VAR) or None)
