"""Fault injection for the crash-safety tests: ``RLHF_CRASH_AT=<point>`` kills the process with SIGKILL at
that named point, the harshest crash there is (no cleanup, no flush), so a test can prove that a re-run
recovers from exactly there. Unset, a crash point costs one dictionary lookup."""
from __future__ import annotations

import os
import signal

CRASH_VAR = "RLHF_CRASH_AT"


def crashpoint(name: str) -> None:
    """Die here when ``RLHF_CRASH_AT`` names this point; ``name#k`` dies on the k-th arrival (counted per process)."""
    target = os.environ.get(CRASH_VAR)
    if not target:
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if _arrivals[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_arrivals: dict[str, int] = {}
