"""Disk cache of CLIP embeddings, so refitting a reward model after every labelling round costs no CLIP passes.

Keys are the sha256 of the image's pixels (shape and dtype included) or of the text, under a folder per
backbone (``backbone_name``: name plus weight fingerprint), one ``.npy`` per item. One file per item keeps
writes atomic and lets several processes share the cache without locks.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reward_models.features import backbone_name
from rlhf.models import Clip


def image_key(image: np.ndarray) -> str:
    image = np.ascontiguousarray(image)
    header = f"{image.shape}|{image.dtype.str}|".encode()
    return hashlib.sha256(header + image.tobytes()).hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Unit-norm image and text embeddings of one CLIP, computed once and kept in ``folder``."""

    def __init__(self, folder: str | Path, clip: Clip, batch_size: int = 256):
        self.clip = clip
        self.backbone = backbone_name(clip)
        self.folder = Path(folder) / re.sub(r"[^A-Za-z0-9._@-]+", "_", self.backbone)
        self.batch_size = batch_size
        self._memory: dict[str, np.ndarray] = {}

    def images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of uint8 (H, W, 3) images."""
        return self._lookup("images", [image_key(im) for im in images], list(images),
                            lambda batch: self.clip.embed_images(batch).cpu().numpy())

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 embeddings of texts."""
        return self._lookup("texts", [text_key(t) for t in texts], list(texts),
                            lambda batch: self.clip.embed_texts(batch).cpu().numpy())

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / kind / key[:2] / f"{key}.npy"

    def _lookup(self, kind: str, keys: list[str], items: list, embed: Callable[[list], np.ndarray]) -> np.ndarray:
        missing: dict[str, object] = {}
        for key, item in zip(keys, items):
            if key in self._memory or key in missing:
                continue
            path = self._path(kind, key)
            if path.is_file():
                self._memory[key] = np.load(path)
            else:
                missing[key] = item
        if missing:
            todo = list(missing.items())
            with tqdm(total=len(todo), desc=f"embedding {kind}", unit=kind[:-1], leave=False) as bar:
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start:start + self.batch_size]
                    for (key, _), emb in zip(chunk, embed([item for _, item in chunk]).astype(np.float32)):
                        self._store(kind, key, emb)
                    bar.update(len(chunk))
        return np.stack([self._memory[k] for k in keys])

    def _store(self, kind: str, key: str, emb: np.ndarray) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
        self._memory[key] = emb
