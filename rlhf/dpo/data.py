"""Labelled pairs for direct preference training, from a label store's export, a public Pick-a-Pic-style file
(images as ``jpg_0`` / ``jpg_1`` bytes) or a run's own store. Only pairs with a winner are used: ties, 'both bad'
and skips say nothing about which image is better."""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rlhf.store import StoreError, read_rows


class PairsError(ValueError):
    """A pairs file that cannot be trained on; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    winner: Path | bytes
    """an image file, or the encoded image itself"""
    loser: Path | bytes


def load_pixels(source: Path | bytes, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the image resized on its shorter side and centre-cropped, as diffusers' DPO example
    prepares its images."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        im = im.convert("RGB")
        scale = size / min(im.size)
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))


def pairs_from_rows(rows: list[dict[str, Any]], images: Path, source: str) -> tuple[list[PreferencePair], Counter]:
    """The pairs with a winner, and how many rows were left out and why; image paths are relative to ``images``."""
    pairs, skipped = [], Counter()
    for number, row in enumerate(rows, start=1):
        missing = [c for c in ("caption", "label_0", "label_1") if c not in row]
        if missing:
            raise PairsError(f"{source} row {number}: no {', '.join(missing)} column; Pick-a-Pic rows need caption, "
                             "image_0/image_1 (paths) or jpg_0/jpg_1 (bytes), label_0 and label_1")
        if row["label_0"] == row["label_1"]:
            skipped["tie" if row["label_0"] else "no winner (both bad or skip)"] += 1
            continue
        sides = []
        for k in (0, 1):
            if row.get(f"jpg_{k}") is not None:
                sides.append(bytes(row[f"jpg_{k}"]))
            elif row.get(f"image_{k}"):
                path = images / row[f"image_{k}"]
                if not path.is_file():
                    raise PairsError(f"{source} row {number}: no image at {path}; pass --images, the folder the image "
                                     "paths are relative to (a run folder's parent)")
                sides.append(path)
            else:
                raise PairsError(f"{source} row {number}: no image_{k} path or jpg_{k} bytes")
        winner = 0 if row["label_0"] > row["label_1"] else 1
        pairs.append(PreferencePair(str(row["caption"]), sides[winner], sides[1 - winner]))
    return pairs, skipped


def read_pairs(path: Path, images: Path | None = None) -> tuple[list[PreferencePair], Counter]:
    """Pairs of a .jsonl or .parquet file; ``images`` defaults to the file's folder."""
    try:
        rows = read_rows(Path(path))
    except StoreError as e:
        raise PairsError(str(e)) from None
    pairs, skipped = pairs_from_rows(rows, Path(images) if images else Path(path).parent, str(path))
    if not pairs:
        raise PairsError(f"{path}: none of its {len(rows)} rows has a winner ({dict(skipped)}); label some pairs left or right")
    return pairs, skipped
