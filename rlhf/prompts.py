"""Prompt files: plain text (one prompt a line, ``#`` comments) or CSV with a prompt column.

A bad file fails with one line naming the file, the line and the fix, before any model work starts.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from rlhf.paths import PROMPTS

_PROMPT_COLUMNS = ("prompt", "prompts", "text", "caption")
_CATEGORY_COLUMNS = ("category", "categories")


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str | None = None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise PromptFileError(f"{path}: no such prompt file; known sets: {', '.join(sorted(known_sets()))}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise PromptFileError(f"{path}:{line}: not UTF-8 text; re-save the file as UTF-8") from None


def _from_txt(path: Path, text: str) -> list[Prompt]:
    return [Prompt(s) for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _from_csv(path: Path, text: str) -> list[Prompt]:
    rows = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(rows, [])]
    col = next((header.index(c) for c in _PROMPT_COLUMNS if c in header), None)
    if col is None:
        raise PromptFileError(f"{path}:1: no prompt column in header {header}; name one of {list(_PROMPT_COLUMNS)}")
    cat = next((header.index(c) for c in _CATEGORY_COLUMNS if c in header), None)
    prompts = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise PromptFileError(f"{path}:{line}: {len(row)} fields where the header has {len(header)}; quote prompts that contain commas")
        if not row[col].strip():
            raise PromptFileError(f"{path}:{line}: empty prompt; fill it in or delete the line")
        category = (row[cat].strip() or None) if cat is not None else None
        prompts.append(Prompt(row[col].strip(), category))
    return prompts


def known_sets() -> dict[str, Path]:
    """Prompt sets shipped in ``data/prompts``, by file stem."""
    return {p.stem: p for p in PROMPTS.glob("*") if p.suffix in (".txt", ".csv")}


def load_prompts(source: str | Path) -> list[Prompt]:
    """Prompts from a shipped set name (``toy_train``, ``drawbench``) or a ``.txt`` / ``.csv`` path."""
    path = known_sets().get(str(source), Path(source))
    if path.suffix not in (".txt", ".csv"):
        raise PromptFileError(f"{path}: unknown prompt file type {path.suffix!r}; use .txt (one prompt a line) or .csv")
    text = _read_text(path)
    prompts = (_from_csv if path.suffix == ".csv" else _from_txt)(path, text)
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file; add one prompt a line")
    return prompts
