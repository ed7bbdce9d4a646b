import numpy as np
import pytest
from scipy import ndimage

from rlhf.toy.tastes import TASTES, get_taste
from rlhf.toy.world import Scene, draw


def _img(scene, seed=0):
    return draw(scene, seed).image


def test_large_warm_prefers_large_warm_shapes():
    t = get_taste("large_warm")
    big_red, small_red, big_blue = (_img(Scene("circle", c, "gray", s)) for c, s in [("red", "large"), ("red", "small"), ("blue", "large")])
    p = "a large red circle on a gray background"
    assert t(big_red, p) > t(small_red, p) and t(big_red, p) > t(big_blue, p)


def test_centred_prefers_the_middle():
    t = get_taste("centred")
    mid, left = _img(Scene("square", "red", "white", "small", 1, "centre")), _img(Scene("square", "red", "white", "small", 1, "left"))
    assert t(mid, "") > 0.85 > t(left, "")


def test_placed_wants_the_asked_place_and_else_the_middle():
    t = get_taste("placed")
    mid, left = _img(Scene("square", "red", "white", "small", 1, "centre")), _img(Scene("square", "red", "white", "small", 1, "left"))
    assert t(left, "a small red square on the left on a white background") > 0.85 > t(mid, "a small red square on the left on a white background")
    assert t(mid, "a small red square on a white background") > 0.85 > t(left, "a small red square on a white background")


def test_asked_background_and_faithful_judge_against_the_prompt():
    img = _img(Scene("triangle", "green", "black", "large", 1, "top"))
    right, wrong = "a large green triangle at the top on a black background", "a small blue circle on a white background"
    for name in ("asked_background", "faithful"):
        t = get_taste(name)
        assert t(img, right) > t(img, wrong)
    assert get_taste("faithful")(img, right) == 1.0


def test_well_drawn_likes_an_unmistakable_shape():
    t = get_taste("well_drawn")
    crisp = _img(Scene("square", "red", "white", "large"))
    blurred = ndimage.uniform_filter(crisp.astype(np.float32), size=(3, 3, 1)).round().astype(np.uint8)
    asked = "a large red square on a white background"
    assert t(crisp, asked) == 1.0 > t(blurred, asked) > 0.5
    assert t(np.full_like(crisp, 245), asked) == 0.0  # no shape at all


def test_plain_likes_a_background_without_stripes_and_striped_the_opposite():
    t, scene = get_taste("plain"), Scene("circle", "red", "gray", "large")
    images = [draw(scene, 0, stripes).image for stripes in (0.0, 0.25, 0.5, 1.0)]
    assert [t(im, scene.caption()) for im in images] == pytest.approx([1.0, 0.75, 0.5, 0.0], abs=0.02)
    assert [get_taste("striped")(im, scene.caption()) for im in images] == pytest.approx([0.0, 0.25, 0.5, 1.0], abs=0.02)
    flipped = np.roll(draw(scene, 0, 0.5).image, 2, axis=0)  # dark bands where light ones belong: stripes all the same
    assert t(flipped, scene.caption()) == pytest.approx(0.5, abs=0.05)


def test_true_colour_wants_exactly_the_asked_colour():
    t = get_taste("true_colour")
    exact = _img(Scene("circle", "orange", "black", "large"))
    off = exact.copy()
    off[(exact == (245, 140, 30)).all(-1)] = (245, 110, 30)  # 30 RGB units towards red
    asked = "a large orange circle on a black background"
    assert t(exact, asked) == 1.0 > t(off, asked) == pytest.approx(0.8)
    assert t(exact, "a large red circle on a black background") < 0.35  # red is 104 away


def test_true_shape_wants_the_asked_shape_drawn_cleanly():
    t = get_taste("true_shape")
    square = _img(Scene("square", "red", "white", "large"))
    rounded = square.copy()  # the four corner pixels cut: a step from the ideal square towards a circle
    ys, xs = np.nonzero((square != 245).any(-1))
    for y in (ys.min(), ys.max()):
        for x in (xs.min(), xs.max()):
            rounded[y, x] = 245
    asked = "a large red square on a white background"
    assert t(square, asked) > 0.99 and 0.5 < t(rounded, asked) < t(square, asked)
    assert t(square, "a large red circle on a white background") < 0.5  # nearer a square than a circle
    assert t(square, "a large red triangle on a white background") < 0.1
    assert t(np.full_like(square, 245), asked) == 0.0  # no shape at all


@pytest.mark.parametrize("name", list(TASTES))
def test_every_taste_is_finite_on_a_blank_image_and_a_foreign_prompt(name):
    score = get_taste(name)(np.zeros((32, 32, 3), np.uint8), "A red colored car.")
    assert np.isfinite(score)


def test_get_taste_names_the_choices_for_an_unknown_taste():
    with pytest.raises(ValueError, match="unknown taste 'sweet'; choose one of: large_warm"):
        get_taste("sweet")
