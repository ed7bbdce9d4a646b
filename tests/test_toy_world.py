import numpy as np
import pytest

from rlhf.toy.world import (
    BACKGROUNDS, IMAGE_SIZE, PALETTE, SHAPE_COLOURS, STRIPE_AMPLITUDE, Scene, dataset, draw, parse_caption, random_scene,
    stripe_signs, toy_prompt_sets,
)
from rlhf.paths import PROMPTS


def test_dataset_is_deterministic_for_a_seed():
    a, b, c = dataset(20, seed=3), dataset(20, seed=3), dataset(20, seed=4)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert [(x.scene, x.stripes) for x in a] == [(y.scene, y.stripes) for y in b]
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c))


def test_caption_parses_back_to_its_scene_for_every_kind():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(500)]
    assert {s.count for s in scenes} == {1, 2, 3}
    assert any(s.position for s in scenes) and any(s.position is None for s in scenes)
    for s in scenes:
        assert parse_caption(s.caption()) == s


@pytest.mark.parametrize("prompt", ["A red colored car.", "a small red circle on a red background", "a red circle on a blue background", ""])
def test_parse_caption_returns_none_for_non_toy_prompts(prompt):
    assert parse_caption(prompt) is None


def test_drawing_uses_only_the_scene_colours_and_keeps_shapes_inside():
    drawings = dataset(200, seed=5)
    assert 0.4 < np.mean([d.stripes > 0 for d in drawings]) < 0.6
    assert min(d.stripes for d in drawings if d.stripes) >= 0.25 and max(d.stripes for d in drawings) <= 1
    for d in drawings:
        band = np.round(d.stripes * STRIPE_AMPLITUDE * stripe_signs(IMAGE_SIZE))
        background = {tuple(np.clip(np.add(PALETTE[d.scene.background], s), 0, 255)) for s in band}
        colours = {tuple(c) for c in d.image.reshape(-1, 3)}
        assert colours <= background | {PALETTE[d.scene.colour]}
        assert d.scene.colour in SHAPE_COLOURS and d.scene.background in BACKGROUNDS
        assert d.scene.colour != d.scene.background
        assert len(d.centres) == d.scene.count
        assert all(0 < x < IMAGE_SIZE and 0 < y < IMAGE_SIZE for x, y in d.centres)


def test_draw_rejects_an_unknown_shape():
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        draw(Scene("star", "red", "white"))


def test_shipped_toy_prompt_files_match_their_generator():
    for name, prompts in toy_prompt_sets().items():
        lines = [l for l in (PROMPTS / f"{name}.txt").read_text().splitlines() if not l.startswith("#")]
        assert lines == prompts
        assert all(parse_caption(p) for p in prompts)
    sets = toy_prompt_sets()
    assert not set(sets["toy_train"]) & set(sets["toy_eval"])
