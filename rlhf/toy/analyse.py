"""Read a toy scene back out of any RGB image by plain image processing.

This is the ground truth of the toy world: synthetic labellers judge images through it and the
prompt-following rate is measured with it, so it must work on model samples (blurry, off-palette) as well
as on drawings. Every attribute comes with a margin-based confidence in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rlhf.toy.world import IMAGE_SIZE, PALETTE, POSITIONS, SHAPE_COLOURS, SIZES, STRIPE_AMPLITUDE, Scene, stripe_signs

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], np.float32)  # (P, 3)
# (fill, taper) of each ideal shape: area / bounding-box area, and (bottom-third width - top-third width) / width
_SHAPE_FEATURES = {"circle": (np.pi / 4, 0.0), "square": (1.0, 0.0), "triangle": (0.5, 2 / 3)}
_MIN_AREA = 6  # pixels; smaller blobs are noise
_FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as foreground


@dataclass(frozen=True)
class Blob:
    shape: str
    colour: str
    size: str
    x: float  # centroid, pixels in a 32-pixel frame
    y: float
    area: int
    rgb: tuple[float, float, float]  # mean colour
    confidence: float
    form: tuple[float, float]  # (fill, taper): what `_shape` reads the shape from


@dataclass(frozen=True)
class Analysis:
    background: str
    blobs: tuple[Blob, ...]
    confidence: float
    stripes: float = 0.0  # background stripes' strength: 1 for the toy world's strongest, 0 plain (can dip below)

    @property
    def count(self) -> int:
        return len(self.blobs)

    @property
    def main(self) -> Blob | None:
        """The largest blob: the one a single-shape caption talks about."""
        return max(self.blobs, key=lambda b: b.area, default=None)

    @property
    def position(self) -> str | None:
        return None if self.main is None else _position(self.main.x, self.main.y)

    def scene(self) -> Scene | None:
        """The analysis as the scene a caption would name; None when no shape was found."""
        b = self.main
        if b is None:
            return None
        return Scene(b.shape, b.colour, self.background, b.size, min(self.count, 3), self.position)


def _margin(d: np.ndarray) -> tuple[int, float]:
    """Index of the smallest distance and a confidence: 0 when the two nearest tie, 1 when one is exact."""
    order = np.argsort(d)
    best, second = d[order[0]], d[order[1]]
    return int(order[0]), float(1.0 - best / max(second, 1e-6))


def nearest_colour(rgb: np.ndarray, allowed: tuple[str, ...] | None = None) -> tuple[str, float]:
    names = list(allowed) if allowed else _NAMES
    d = np.linalg.norm(np.array([PALETTE[n] for n in names], np.float32) - rgb, axis=-1)
    i, conf = _margin(d)
    return names[i], conf


def _position(x: float, y: float) -> str:
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2)


def shape_distances(form: tuple[float, float]) -> dict[str, float]:
    """Distance of a blob's (fill, taper) to each ideal shape's; taper counts half, being noisier."""
    fill, taper = form
    return {name: float(np.hypot(fill - f, 0.5 * (taper - t))) for name, (f, t) in _SHAPE_FEATURES.items()}


def _shape(mask: np.ndarray) -> tuple[str, str, float, tuple[float, float]]:
    """Shape, size, confidence and (fill, taper) from one blob's mask: its bounding-box fill ratio and taper."""
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = mask.sum() / (h * w)
    rows = mask[ys.min() : ys.max() + 1].sum(axis=1)
    third = max(1, h // 3)
    taper = (rows[-third:].mean() - rows[:third].mean()) / w
    form = (float(fill), float(taper))
    distances = shape_distances(form)
    i, conf = _margin(np.array(list(distances.values())))
    side = max(h, w) * IMAGE_SIZE / mask.shape[0]
    size = "small" if side < (SIZES["small"] + SIZES["large"]) / 2 else "large"
    return list(distances)[i], size, conf, form


def _stripes(img: np.ndarray, background: np.ndarray) -> float:
    """Half the gap between the mean levels of the background's light and dark bands, in units of a full stripe."""
    counts = background.sum(1)
    rows = (img.mean(-1) * background).sum(1) / np.maximum(counts, 1)
    signs = stripe_signs(len(img))
    light, dark = (signs > 0) & (counts > 0), (signs < 0) & (counts > 0)
    if not light.any() or not dark.any():
        return 0.0
    return float((rows[light].mean() - rows[dark].mean()) / (2 * STRIPE_AMPLITUDE))


def analyse(image: np.ndarray) -> Analysis:
    """Attributes of a (H, W, 3) uint8 image; any square size is read in a 32-pixel frame."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    img = image.astype(np.float32)
    scale = IMAGE_SIZE / img.shape[0]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])  # (4W, 3)
    bg_rgb = np.median(border, axis=0)
    background, bg_conf = nearest_colour(bg_rgb)
    fg = np.linalg.norm(img - bg_rgb, axis=-1) > _FOREGROUND_DISTANCE
    labels, n = ndimage.label(fg)
    blobs = []
    min_area = _MIN_AREA / scale**2
    for k in range(1, n + 1):
        mask = labels == k
        area = int(mask.sum())
        if area < min_area:
            continue
        rgb = np.median(img[mask], axis=0)
        colour, c_conf = nearest_colour(rgb, SHAPE_COLOURS)
        shape, size, s_conf, form = _shape(mask)
        y, x = ndimage.center_of_mass(mask)
        blobs.append(
            Blob(shape, colour, size, (x + 0.5) * scale, (y + 0.5) * scale, area, tuple(map(float, rgb)), min(c_conf, s_conf),
                 form)
        )
    blobs.sort(key=lambda b: -b.area)
    confidence = min([bg_conf] + [b.confidence for b in blobs]) if blobs else 0.0
    return Analysis(background, tuple(blobs), confidence, _stripes(img, ~fg))


def follows(analysis: Analysis, asked: Scene) -> dict[str, bool]:
    """Which of the caption's attributes the image shows; the prompt-following metric averages these."""
    got = analysis.main
    out = {
        "shape": got is not None and got.shape == asked.shape,
        "colour": got is not None and got.colour == asked.colour,
        "background": analysis.background == asked.background,
        "count": analysis.count == asked.count,
    }
    if asked.count == 1:
        out["size"] = got is not None and got.size == asked.size
    if asked.position is not None:
        out["position"] = analysis.position == asked.position
    return out
