"""Toy label stores for the app tests: real toy-world drawings saved as PNGs under a data folder.

The app test files import ``make_toy_store`` from here (pytest puts ``tests/`` on the path).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rlhf.store import Store
from rlhf.toy.world import Scene, draw

SCENES = (
    Scene("circle", "red", "blue", "large"),
    Scene("square", "green", "white", "small", position="left"),
    Scene("triangle", "yellow", "black", "large", position="top"),
    Scene("circle", "purple", "gray", "small", count=2),
    Scene("square", "orange", "yellow", "large", position="centre"),
    Scene("triangle", "blue", "white", "small", position="right"),
)


@dataclass
class ToyStore:
    store: Store
    db: Path
    data: Path
    pair_ids: list[int]

    def env(self) -> dict[str, str]:
        return {"RLHF_DB": str(self.db), "RLHF_DATA": str(self.data)}


def add_drawing(store: Store, data: Path, scene: Scene, seed: int, round_id: int, model_id: str = "toy",
                shift: int = 0) -> int:
    """Draw ``scene`` with ``seed``, save it under ``data`` and record it with a relative path.

    ``shift`` moves the picture right by that many pixels: the same prompt and seed drawn differently,
    as a model of a later round would.
    """
    relative = f"round{round_id}/{model_id}/{scene.caption().replace(' ', '_')}-{seed}.png"
    (data / relative).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.roll(draw(scene, seed).image, shift, axis=1)).save(data / relative)
    sha = hashlib.sha256((data / relative).read_bytes()).hexdigest()
    return store.add_image(relative, scene.caption(), round_id, seed, model_id, sha)


def make_toy_store(root: Path, n_pairs: int = 3, round_id: int | None = None, store: Store | None = None,
                   data: Path | None = None) -> ToyStore:
    """``n_pairs`` pairs (two seeds of one scene each) queued in a new round of ``store`` (default a new one at
    ``root/runs/labels.db``); their images are saved under, and recorded relative to, ``data`` (default
    ``root/data``)."""
    data = data or root / "data"
    if store is None:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        store = Store(root / "runs" / "labels.db")
    round_id = round_id or store.add_round({"made_by": "tests"})
    pairs = []
    for k in range(n_pairs):
        scene = SCENES[k % len(SCENES)]
        seed = 10 * (k // len(SCENES))
        pairs.append((add_drawing(store, data, scene, seed, round_id), add_drawing(store, data, scene, seed + 1, round_id)))
    return ToyStore(store, store.path, data, store.queue_pairs(pairs, round_id=round_id))


def test_toy_store_holds_real_pngs_under_relative_paths(tmp_path: Path) -> None:
    toy = make_toy_store(tmp_path, n_pairs=2)
    pair = toy.store.claim_next_pair("ann")
    for image in (pair.left, pair.right):
        assert not Path(image.path).is_absolute()
        with Image.open(toy.data / image.path) as png:
            assert png.size == (32, 32)
