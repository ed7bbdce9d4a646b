"""Hidden tastes: plain scoring functions over what the analyser sees.

A synthetic labeller prefers, with Bradley-Terry noise, the image its taste scores higher; in the toy world
the same function is the hidden score that tells whether a round really improved the model. Every taste
is continuous where it can be (areas, distances, mean colours), so that small improvements register.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from rlhf.toy.analyse import Analysis, analyse, follows, shape_distances
from rlhf.toy.world import IMAGE_SIZE, PALETTE, POSITIONS, SIZES, Scene, parse_caption

_MAX_RGB_DISTANCE = float(np.sqrt(3) * 255)


def _warmth(rgb: tuple[float, float, float]) -> float:
    """0 for pure blue, 1 for pure red; red, orange and yellow all score above 0.8."""
    return float(np.clip((rgb[0] - rgb[2]) / 255 + 1, 0, 2) / 2)


def large_warm(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes large warm-coloured shapes: half for area (up to one large shape), half for warmth."""
    if a.main is None:
        return 0.0
    area = sum(b.area for b in a.blobs) * (IMAGE_SIZE / image.shape[0]) ** 2
    return 0.5 * min(1.0, area / SIZES["large"] ** 2) + 0.5 * _warmth(a.main.rgb)


def _closeness(a: Analysis, x: float, y: float) -> float:
    """1 when the main shape's centroid sits on (x, y), falling linearly to 0 a half-diagonal away or when absent."""
    if a.main is None:
        return 0.0
    return float(1 - np.hypot(a.main.x - x, a.main.y - y) / (IMAGE_SIZE / np.sqrt(2)))


def centred(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes centred compositions: 1 when the main shape sits in the middle, 0 in a corner or when absent."""
    return _closeness(a, IMAGE_SIZE / 2, IMAGE_SIZE / 2)


def placed(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes the main shape where the prompt put it, and centred where the prompt names no place.

    ``centred`` alone contradicts every prompt that asks for "on the left", so aligning to it must cost prompt
    following; this taste agrees with the prompt wherever the prompt speaks.
    """
    return _closeness(a, *POSITIONS[asked.position if asked is not None and asked.position else "centre"])


def asked_background(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes the background the prompt asked for: 1 minus the border's RGB distance to it (0.5 off-world)."""
    if asked is None:
        return 0.5
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    return float(1 - np.linalg.norm(np.median(border, 0) - PALETTE[asked.background]) / _MAX_RGB_DISTANCE)


def faithful(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes images that show what the prompt asked: the share of its attributes that the analyser finds."""
    if asked is None:
        return 0.5
    hits = follows(a, asked)
    return sum(hits.values()) / len(hits)


def well_drawn(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes an unmistakable main shape: the analyser's confidence in its shape and colour (0 when absent).

    A cautionary taste: it pays as well for a colour pushed onto another palette entry as for the asked one drawn
    cleanly, so a policy can raise it by drawing the wrong colour (docs/results/toy_tastes.md).
    """
    return 0.0 if a.main is None else a.main.confidence


def true_shape(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes the main shape drawn as exactly the asked shape: d_other / (d_asked + d_other) over the analyser's
    shape features, 1 on the ideal, 0.5 halfway to the nearest other shape, 0 on it and when absent; off-world
    prompts 0.5.

    It varies within a prompt (std 0.117), but a reward head on the toy CLIP barely sees it (probe R^2 0.031,
    docs/results/toy_tastes.md).
    """
    if asked is None:
        return 0.5
    if a.main is None:
        return 0.0
    d = shape_distances(a.main.form)
    other = min(v for name, v in d.items() if name != asked.shape)
    return float(other / (d[asked.shape] + other + 1e-9))


def true_colour(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes the main shape in exactly the asked colour: 1 minus its median colour's RGB distance to the asked one
    over 150 (red to orange is 104), 0 when absent; off-world prompts judge against the nearest shape colour.

    It varies little within a prompt (std 0.043), since the toy UNet sets its colours per prompt; a reward head on
    the toy CLIP reaches 0.579 on its pairs (docs/results/toy_tastes.md).
    """
    b = a.main
    if b is None:
        return 0.0
    colour = asked.colour if asked is not None else b.colour
    return max(0.0, 1 - float(np.linalg.norm(np.subtract(b.rgb, PALETTE[colour]))) / 150)


def plain(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes plain backgrounds: 1 minus the strength of the background's stripes (1 on a plain one, about 0 under the
    toy world's strongest stripes; 0.7-0.8 on black and white, where they clip).

    Stripes are a style no prompt names, so the pipeline draws both kinds for every prompt; how strong they come out
    is settled along the denoising path and the toy CLIP sees it (docs/results/toy_tastes.md).
    """
    return float(1 - min(1.0, abs(a.stripes)))


def striped(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes striped backgrounds, the opposite of ``plain``: the stripes' strength, up to the drawings' strongest."""
    return 1 - plain(image, a, asked)


def bright(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes bright images: mean luminance in [0, 1]."""
    return float((image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean() / 255)


def red(image: np.ndarray, a: Analysis, asked: Scene | None) -> float:
    """Likes red: mean of R - (G + B) / 2, in [-1, 1]."""
    img = image.astype(np.float32) / 255
    return float((img[..., 0] - (img[..., 1] + img[..., 2]) / 2).mean())


@dataclass(frozen=True)
class Taste:
    name: str
    parts: tuple[tuple[Callable[[np.ndarray, Analysis, Scene | None], float], float], ...]

    @property
    def description(self) -> str:
        return " + ".join(f"{w:g} * {fn.__name__}" for fn, w in self.parts)

    def __call__(self, image: np.ndarray, prompt: str) -> float:
        a, asked = analyse(image), parse_caption(prompt)
        return sum(w * fn(image, a, asked) for fn, w in self.parts)

    def score(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        return np.array([self(im, p) for im, p in zip(images, prompts)], np.float32)


TASTES: dict[str, Taste] = {
    t.name: t
    for t in [
        Taste("large_warm", ((large_warm, 1.0),)),
        Taste("centred", ((centred, 1.0),)),
        Taste("placed", ((placed, 1.0),)),
        Taste("asked_background", ((asked_background, 1.0),)),
        Taste("faithful", ((faithful, 1.0),)),
        Taste("well_drawn", ((well_drawn, 1.0),)),
        Taste("true_colour", ((true_colour, 1.0),)),
        Taste("true_shape", ((true_shape, 1.0),)),
        Taste("plain", ((plain, 1.0),)),
        Taste("striped", ((striped, 1.0),)),
        Taste("bright", ((bright, 1.0),)),
        Taste("red", ((red, 1.0),)),
        Taste("warm_and_faithful", ((large_warm, 0.5), (faithful, 0.5))),
        Taste("tidy", ((centred, 0.5), (asked_background, 0.5))),
    ]
}


def get_taste(name: str) -> Taste:
    if name not in TASTES:
        raise ValueError(f"unknown taste {name!r}; choose one of: {', '.join(TASTES)}")
    return TASTES[name]
