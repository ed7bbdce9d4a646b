"""Where the app finds its label store and images, read from environment variables."""
from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.paths import RUNS
from rlhf.store import Round

DB_VAR = "RLHF_DB"
DATA_VAR = "RLHF_DATA"
TOKEN_VAR = "RLHF_APP_TOKEN"
DEFAULT_DB = RUNS / "labels.db"
ROUND_COMMAND = "python -m rlhf.round"
DONE_PHASE = "done"
"""The phase of a finished round (the last of ``rlhf.round.loop.PHASES``, not imported: it pulls in torch)."""


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
        db = Path(environ.get(DB_VAR) or DEFAULT_DB).absolute()
        data = Path(environ[DATA_VAR]).absolute() if environ.get(DATA_VAR) else db.parent.parent
        return cls(db=db, data=data, token=environ.get(TOKEN_VAR) or None)


def round_command(config: AppConfig, rounds: int) -> str:
    """The command that drives the loop until ``rounds`` rounds are done: it samples images and queues a
    round's pairs, then returns while they wait for labels. It names ``--run-dir`` unless the store is the
    default one, so the round lands in the store this app reads."""
    command = f"{ROUND_COMMAND} run --rounds {rounds}"
    if config.db.resolve() == DEFAULT_DB.resolve():
        return command
    runs = config.runs
    if runs.is_relative_to(Path.cwd()):
        runs = runs.relative_to(Path.cwd())
    return f"{command} --run-dir {shlex.quote(str(runs))}"


def rounds_to_run(rounds: Sequence[Round], labelled_round: int | None = None) -> int:
    """The ``--rounds`` that makes the loop queue pairs to label next: one more than the finished rounds,
    which carries on an unfinished newest round, or starts a new one after a finished one; one more again
    when the newest round is ``labelled_round`` (nothing left to label in it), so it is finished first."""
    done = sum(r.phase == DONE_PHASE for r in rounds)
    newest = rounds[-1] if rounds else None
    return done + 1 + (newest is not None and newest.phase != DONE_PHASE and newest.id == labelled_round)
