"""Who answers a round's pairs: people in the app, or a synthetic labeller with a hidden taste.

The synthetic labeller goes through exactly the calls the app makes (``claim_next_pair`` then
``record_label``), one pair at a time, so the loop's tests exercise the real labelling path. Its choice for a
pair is seeded by the pair and its name: a re-run after a crash gives the same answer to the same pair.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from reward_models.synthetic import Persona, choose, get_persona
from rlhf.faults import crashpoint
from rlhf.store import Store
from rlhf.toy.tastes import get_taste


@dataclass(frozen=True)
class Synthetic:
    persona: Persona

    @property
    def name(self) -> str:
        return f"synthetic-{self.persona.taste}-{self.persona.name}"


def parse_labeller(spec: str) -> Synthetic | None:
    """'human' -> None; 'synthetic:<taste>[:<persona>]' -> a synthetic labeller (persona 'typical' by default)."""
    if spec == "human":
        return None
    kind, _, rest = spec.partition(":")
    taste, _, persona = rest.partition(":")
    if kind != "synthetic" or not taste:
        raise ValueError("use 'human' or 'synthetic:<taste>[:<persona>]', e.g. synthetic:large_warm")
    return Synthetic(get_persona(persona or "typical", taste))


def load_image(data_root: Path, path: str) -> np.ndarray:
    with Image.open(data_root / path) as im:
        return np.asarray(im.convert("RGB"))


def label_round(store: Store, round_id: int, labeller: Synthetic, data_root: Path) -> int:
    """Answer every pair of the round this labeller has not labelled yet; returns how many it labelled now."""
    taste = get_taste(labeller.persona.taste)
    scores: dict[int, float] = {}

    def score(image, prompt: str) -> float:
        if image.id not in scores:
            scores[image.id] = taste(load_image(data_root, image.path), prompt)
        return scores[image.id]

    done = 0
    with tqdm(total=store.progress(labeller.name, round_id).queued, desc=f"labelling ({labeller.name})", unit="pair") as bar:
        while (pair := store.claim_next_pair(labeller.name, round_id)) is not None:
            seed = int.from_bytes(hashlib.sha256(f"{pair.pair_id}/{labeller.name}".encode()).digest()[:8], "little")
            left, right = score(pair.left, pair.prompt), score(pair.right, pair.prompt)
            choice = choose(labeller.persona, np.array([left]), np.array([right]), seed)[0]
            crashpoint("label")
            store.record_label(pair.pair_id, labeller.name, choice, pair.left.id)
            done += 1
            bar.update()
    return done


def label_coverage(store: Store, round_id: int) -> tuple[int, int]:
    """(pairs of the round with at least one label, pairs queued in the round)."""
    labelled = {label.pair_id for label in store.labels(round_id)}
    return len(labelled), len(store.pairs(round_id))
