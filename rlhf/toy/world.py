"""The toy world: captioned pictures of coloured shapes, drawn procedurally and deterministically by seed.

It stands in for the real world wherever no hub is reachable (CI, a laptop): the tiny diffusion pipeline and
the tiny CLIP are trained on it, and the analyser (``rlhf.toy.analyse``) reads the same attributes back out of
any image, so a synthetic labeller and the prompt-following metric have exact ground truth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 32
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 50),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "purple": (145, 55, 200),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
BACKGROUNDS = ("black", "white", "gray", "blue", "yellow")
WARM_COLOURS = ("red", "orange", "yellow")
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 7, "large": 13}  # bounding-box side in pixels
STRIPE_AMPLITUDE = 24
"""RGB levels a full-strength background stripe adds or takes away: 24 * sqrt(3) = 42 keeps a stripe under the
analyser's foreground distance (60)"""
STRIPE_SHARE = 0.5  # of drawings with stripes; their strength is uniform in [0.25, 1]
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
POSITIONS = {  # centroid (x, y) of a lone shape
    "centre": (16.0, 16.0),
    "left": (8.5, 16.0),
    "right": (23.5, 16.0),
    "top": (16.0, 8.5),
    "bottom": (16.0, 23.5),
}
POSITION_PHRASES = {
    "centre": "in the centre",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}


@dataclass(frozen=True)
class Scene:
    """What a caption asks for; ``position`` is None when the caption does not name one."""

    shape: str
    colour: str
    background: str
    size: str = "small"
    count: int = 1
    position: str | None = None

    def caption(self, place: str | None = None) -> str:
        """The template caption; ``place`` (e.g. "at the top left") describes a lone shape's spot in its stead."""
        if self.count > 1:
            return f"{COUNT_WORDS[self.count]} {self.colour} {self.shape}s on a {self.background} background"
        place = place or (POSITION_PHRASES[self.position] if self.position else None)
        where = f" {place}" if place else ""
        return f"a {self.size} {self.colour} {self.shape}{where} on a {self.background} background"


@dataclass
class Drawing:
    """A rendered scene: the pixels plus the exact placement of every shape."""

    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    centres: list[tuple[float, float]] = field(default_factory=list)
    stripes: float = 0.0  # strength of the background stripes, 0 (plain) to 1


_CAPTION = re.compile(
    r"^(?P<count>a|two|three) (?:(?P<size>small|large) )?(?P<colour>\w+) (?P<shape>circle|square|triangle)s?"
    r"(?: (?P<where>in the centre|on the left|on the right|at the top|at the bottom))?"
    r" on a (?P<background>\w+) background$"
)


def parse_caption(caption: str) -> Scene | None:
    """The scene a toy caption asks for, or None for any other prompt (e.g. DrawBench's)."""
    m = _CAPTION.match(caption.strip().lower())
    if m is None or m["colour"] not in SHAPE_COLOURS or m["background"] not in BACKGROUNDS:
        return None
    count = {"a": 1, "two": 2, "three": 3}[m["count"]]
    if (count == 1) != (m["size"] is not None) or (count > 1 and m["where"]):
        return None
    position = {v: k for k, v in POSITION_PHRASES.items()}.get(m["where"]) if m["where"] else None
    return Scene(m["shape"], m["colour"], m["background"], m["size"] or "small", count, position)


def random_scene(rng: np.random.Generator) -> Scene:
    """One scene from the toy distribution: a third name a position, a fifth show several small shapes."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = SHAPE_COLOURS[rng.integers(len(SHAPE_COLOURS))]
    backgrounds = [b for b in BACKGROUNDS if b != colour]
    background = backgrounds[rng.integers(len(backgrounds))]
    kind = rng.random()
    if kind < 0.2:
        return Scene(shape, colour, background, "small", int(rng.integers(2, 4)))
    size = ("small", "large")[rng.integers(2)]
    position = tuple(POSITIONS)[rng.integers(len(POSITIONS))] if kind < 0.55 else None
    return Scene(shape, colour, background, size, 1, position)


def random_stripes(rng: np.random.Generator) -> float:
    """Background stripes, a style no caption names: plain half the time, else of a strength uniform in [0.25, 1].

    Real images vary within a prompt in ways people care about and prompts leave open (lighting, texture, finish);
    the stripes are that in the toy world. A prompt never asks for them, so the pipeline draws both kinds for every
    prompt, and a taste for or against them is one that only labels can teach (docs/toy_world.md).
    """
    return 0.0 if rng.random() >= STRIPE_SHARE else float(rng.uniform(0.25, 1.0))


def stripe_signs(size: int) -> np.ndarray:
    """+1 / -1 per image row: horizontal bands 2 pixels high in a 32-pixel frame, the first one lighter."""
    return 1 - 2 * ((np.arange(size) * IMAGE_SIZE // size) // 2 % 2)


def _shape_mask(shape: str, side: int, cx: float, cy: float) -> np.ndarray:
    """Hard-edged (no anti-aliasing) mask of one shape whose bounding box has ``side`` pixels."""
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5  # pixel centres
    half = side / 2
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    if shape == "triangle":  # apex up; the centroid of a triangle lies a third of the way up from the base
        top, bottom = cy - 2 * side / 3, cy + side / 3
        frac = (ys - top) / (bottom - top)
        return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= half * frac)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _placements(scene: Scene, rng: np.random.Generator) -> list[tuple[float, float]]:
    side = SIZES[scene.size]
    margin = side / 2 + 1
    if scene.count == 1:
        if scene.position is not None:
            cx, cy = POSITIONS[scene.position]
            return [(cx + rng.uniform(-1.5, 1.5), cy + rng.uniform(-1.5, 1.5))]
        return [tuple(rng.uniform(margin, IMAGE_SIZE - margin, size=2))]
    for _ in range(1000):  # rejection-sample non-touching positions
        pts = rng.uniform(margin, IMAGE_SIZE - margin, size=(scene.count, 2))
        gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(scene.count) * IMAGE_SIZE
        if gaps.min() > side * 1.5 + 2:
            return [tuple(p) for p in pts]
    raise RuntimeError(f"could not place {scene.count} shapes of side {side} without overlap")


def draw(scene: Scene, seed: int | np.random.Generator = 0, stripes: float = 0.0) -> Drawing:
    """Render ``scene`` over a background striped with strength ``stripes``; the seed only moves shapes within what
    the caption allows."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(PALETTE[scene.background], np.float32) + stripes * STRIPE_AMPLITUDE * stripe_signs(IMAGE_SIZE)[:, None]
    image = np.repeat(np.clip(np.round(rows), 0, 255).astype(np.uint8)[:, None], IMAGE_SIZE, axis=1)  # (H, W, 3)
    centres = _placements(scene, rng)
    for cx, cy in centres:
        image[_shape_mask(scene.shape, SIZES[scene.size], cx, cy)] = PALETTE[scene.colour]
    return Drawing(scene, image, centres, stripes)


def dataset(n: int, seed: int = 0) -> list[Drawing]:
    """``n`` random captioned drawings, identical for identical seeds."""
    rng = np.random.default_rng(seed)
    return [draw(random_scene(rng), rng, random_stripes(rng)) for _ in range(n)]


def toy_prompts(n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct toy captions, none in ``exclude``: the shipped prompt sets are made with this."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        c = random_scene(rng).caption()
        if c not in out and c not in exclude:
            out.append(c)
    return out


TOY_PROMPT_SETS = {"toy_train": (16, 1), "toy_eval": (200, 2)}  # name: (count, seed); eval excludes train


def toy_prompt_sets() -> dict[str, list[str]]:
    train = toy_prompts(*TOY_PROMPT_SETS["toy_train"])
    return {"toy_train": train, "toy_eval": toy_prompts(*TOY_PROMPT_SETS["toy_eval"], exclude=set(train))}
