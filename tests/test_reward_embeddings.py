import copy

import numpy as np
import pytest
import torch

from reward_models.embeddings import EmbeddingCache, image_key
from rlhf.models import Clip, load_clip
from rlhf.toy.world import dataset


@pytest.fixture(scope="module")
def clip():
    return load_clip()


@pytest.fixture(scope="module")
def drawings():
    return dataset(12, seed=4)


def _counting(clip: Clip, monkeypatch) -> tuple[Clip, list[int]]:
    """A copy of ``clip`` that records how many images each embed_images call gets."""
    calls: list[int] = []
    counted = Clip(clip.model, clip.preprocess, clip.tokenizer, clip.name)
    original = counted.embed_images

    def embed_images(images):
        calls.append(len(images))
        return original(images)

    monkeypatch.setattr(counted, "embed_images", embed_images)
    return counted, calls


def test_cached_embeddings_equal_the_clip_embeddings(clip, drawings, tmp_path):
    images = [d.image for d in drawings]
    cache = EmbeddingCache(tmp_path, clip)
    np.testing.assert_allclose(cache.images(images), clip.embed_images(images).numpy(), atol=1e-6)
    texts = [d.scene.caption() for d in drawings]
    np.testing.assert_allclose(cache.texts(texts), clip.embed_texts(texts).numpy(), atol=1e-6)


def test_a_new_cache_on_the_same_folder_reads_disk_without_running_clip(clip, drawings, tmp_path, monkeypatch):
    images = [d.image for d in drawings]
    first = EmbeddingCache(tmp_path, clip).images(images)
    counted, calls = _counting(clip, monkeypatch)
    assert np.array_equal(EmbeddingCache(tmp_path, counted).images(images[::-1]), first[::-1]) and calls == []


def test_duplicate_and_known_images_are_embedded_once(clip, drawings, tmp_path, monkeypatch):
    counted, calls = _counting(clip, monkeypatch)
    cache = EmbeddingCache(tmp_path, counted, batch_size=4)
    images = [d.image for d in drawings]
    cache.images(images[:6] + images[:6])
    cache.images(images)
    assert calls == [4, 2, 4, 2]  # 6 new in batches of 4, then the other 6


def test_image_key_changes_with_pixels_and_shape(drawings):
    image = drawings[0].image
    brighter = image.copy()
    brighter[0, 0, 0] ^= 1
    keys = {image_key(image), image_key(brighter), image_key(image.reshape(16, 64, 3))}
    assert len(keys) == 3 and image_key(image.copy()) == image_key(image)


def test_other_weights_under_the_same_name_get_their_own_folder(clip, tmp_path):
    model = copy.deepcopy(clip.model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    retrained = Clip(model, clip.preprocess, clip.tokenizer, clip.name)
    assert EmbeddingCache(tmp_path, clip).folder != EmbeddingCache(tmp_path, retrained).folder
