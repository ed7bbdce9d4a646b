import numpy as np
import pytest
import torch

from rlhf.ddpo.rewards import Aesthetic, AestheticHead, HPSv2, make_reward
from rlhf.models import ModelLoadError, load_clip
from rlhf.toy.world import Scene, draw

PROMPTS = ["a large red circle on a white background", "a small blue square on the left on a black background"]
IMAGES = [draw(Scene("circle", "red", "white", "large")).image, draw(Scene("square", "blue", "black", "small", 1, "left")).image]


def test_hpsv2_scores_with_the_checkpoint_it_is_given(preference_clip):
    """An HPSv2-style checkpoint holding the toy CLIP's weights loads exactly, and scores the right caption higher."""
    weights, arch = preference_clip
    hps, toy = HPSv2(weights, arch), load_clip()
    loaded = hps.clip.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in toy.model.state_dict().items())
    right, _ = hps(IMAGES, PROMPTS, [{}, {}])
    swapped, _ = hps(IMAGES, PROMPTS[::-1], [{}, {}])
    assert (right > swapped).all() and (np.abs(right) <= 1).all()


def test_missing_hpsv2_checkpoint_gets_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        make_reward(f"hpsv2:{tmp_path / 'HPS_v2.1_compressed.pt'}")
    assert "\n" not in str(e.value) and "HPS_v2.1_compressed.pt" in str(e.value)


def test_aesthetic_head_applies_laion_weights_to_the_image_embedding(tmp_path):
    clip, head = load_clip(), AestheticHead(64).eval()
    torch.save(head.state_dict(), tmp_path / "head.pth")
    scores, _ = Aesthetic(clip, tmp_path / "head.pth")(IMAGES, PROMPTS, [{}, {}])
    with torch.no_grad():
        np.testing.assert_allclose(scores, head(clip.embed_images(IMAGES)).numpy(), rtol=1e-5)
