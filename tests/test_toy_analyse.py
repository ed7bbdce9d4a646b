import numpy as np
import pytest

from rlhf.toy.analyse import analyse, follows
from rlhf.toy.world import PALETTE, Scene, dataset, draw


def test_analyser_recovers_every_attribute_of_99_percent_of_drawings():
    drawings = dataset(1000, seed=11)
    ok = [all(follows(analyse(d.image), d.scene).values()) for d in drawings]
    assert np.mean(ok) >= 0.99


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_analyser_reads_shape_and_size_with_confidence(shape, size):
    a = analyse(draw(Scene(shape, "red", "white", size, 1, "centre"), seed=0).image)
    assert (a.main.shape, a.main.size, a.position, a.background, a.count) == (shape, size, "centre", "white", 1)
    assert 0.3 < a.confidence <= 1.0


def test_analyser_survives_upscaling_and_noise_like_model_samples():
    rng = np.random.default_rng(0)
    drawings = dataset(200, seed=12)
    ok = []
    for d in drawings:
        big = d.image.repeat(2, 0).repeat(2, 1).astype(np.float32)  # 64x64
        noisy = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
        ok.append(all(follows(analyse(noisy), d.scene).values()))
    assert np.mean(ok) >= 0.95


def test_analyser_reads_the_stripes_strength_at_any_scale():
    drawings = [d for d in dataset(300, seed=13) if d.scene.background in ("gray", "blue")]  # where stripes never clip
    read = np.array([analyse(d.image).stripes for d in drawings])
    assert np.abs(read - [d.stripes for d in drawings]).max() < 0.05
    big = [analyse(d.image.repeat(2, 0).repeat(2, 1)).stripes for d in drawings[:20]]
    assert np.allclose(big, read[:20])


def test_analyser_finds_nothing_on_a_blank_image():
    blank = np.full((32, 32, 3), PALETTE["gray"], np.uint8)
    a = analyse(blank)
    assert a.count == 0 and a.main is None and a.confidence == 0.0 and a.background == "gray"
    assert follows(a, Scene("circle", "red", "gray")) == {"shape": False, "colour": False, "background": True, "count": False, "size": False}


def test_analyser_rejects_a_grayscale_array():
    with pytest.raises(ValueError, match="expected an \\(H, W, 3\\) RGB image"):
        analyse(np.zeros((32, 32), np.uint8))
