import copy

import numpy as np
import pytest
import torch

from reward_models.bradley_terry import targets
from reward_models.embeddings import EmbeddingCache
from reward_models.ensemble import BackboneMismatch, RewardModel, RewardModelConfig, train_reward_model
from reward_models.features import backbone_name
from reward_models.synthetic import get_persona, label_pairs, noise_ceiling, taste_scores
from rlhf.models import Clip, load_clip
from rlhf.toy.world import dataset

LABELS = 1000


def _unseen(scene) -> bool:
    """Held out of training: purple shapes and white backgrounds, so that out-of-distribution drawings exist."""
    return scene.colour == "purple" or scene.background == "white"


@pytest.fixture(scope="module")
def clip():
    return load_clip()


@pytest.fixture(scope="module")
def world():
    """Training pool of 700 toy drawings, 1000 pairs among them (each prompt: the caption of its left image)."""
    drawings = dataset(1500, seed=0)
    pool = [d for d in drawings if not _unseen(d.scene)][:700]
    unseen = [d for d in drawings if _unseen(d.scene)][:100]
    rng = np.random.default_rng(0)
    left = rng.integers(len(pool), size=LABELS)
    right = (left + rng.integers(1, len(pool), size=LABELS)) % len(pool)
    return {"pool": pool, "unseen": unseen, "a": [pool[i].image for i in left], "b": [pool[i].image for i in right],
            "prompts": [pool[i].scene.caption() for i in left]}


@pytest.fixture(scope="module")
def fitted(clip, world, tmp_path_factory):
    persona = get_persona("typical", "large_warm")
    choices = label_pairs(persona, world["a"], world["b"], world["prompts"], seed=0)
    cache = EmbeddingCache(tmp_path_factory.mktemp("embeddings"), clip)
    model, held_out = train_reward_model(cache, world["a"], world["b"], world["prompts"], targets(choices),
                                         RewardModelConfig(lam=1.0))
    ceiling = noise_ceiling(persona, taste_scores(persona, world["a"], world["prompts"]),
                            taste_scores(persona, world["b"], world["prompts"]))
    return model, held_out, ceiling


def _images(drawings):
    return [d.image for d in drawings], [d.scene.caption() for d in drawings]


def test_held_out_accuracy_reaches_95_percent_of_the_noise_ceiling(fitted):
    model, held_out, ceiling = fitted
    assert held_out["accuracy"] >= 0.95 * ceiling["accuracy"], (held_out, ceiling)
    assert model.card["held_out_accuracy"] == held_out["accuracy"] and model.card["labels"] == LABELS


def test_ensemble_std_is_larger_on_unseen_colours_than_on_training_drawings(fitted, world):
    model = fitted[0]
    _, std_seen = model.score(*_images(world["pool"][:100]))
    _, std_unseen = model.score(*_images(world["unseen"]))
    assert np.median(std_unseen) > 1.3 * np.median(std_seen), (np.median(std_unseen), np.median(std_seen))


def test_reward_is_mean_minus_lam_times_std(fitted, world):
    model = fitted[0]
    images, prompts = _images(world["pool"][:8])
    mean, std = model.score(images, prompts)
    rewards, info = model(np.stack(images), prompts, [{}] * 8)
    np.testing.assert_allclose(rewards, mean - model.lam * std, rtol=1e-6)
    assert set(info) == {"rm/mean", "rm/std"}


def test_save_load_round_trip_gives_identical_scores(fitted, world, clip, tmp_path):
    model = fitted[0]
    images, prompts = _images(world["pool"][:16] + world["unseen"][:16])
    again = RewardModel.load(model.save(tmp_path / "rm"), clip)
    for before, after in zip(model.score(images, prompts), again.score(images, prompts)):
        assert np.array_equal(before, after)
    assert again.lam == model.lam and again.card["held_out_accuracy"] == model.card["held_out_accuracy"]


def test_load_on_another_backbone_raises_a_one_line_error_naming_both(fitted, clip, tmp_path):
    folder = fitted[0].save(tmp_path / "rm")
    model = copy.deepcopy(clip.model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # same architecture and name, other weights: e.g. a retrained toy CLIP
    other = Clip(model, clip.preprocess, clip.tokenizer, clip.name)
    with pytest.raises(BackboneMismatch) as e:
        RewardModel.load(folder, other)
    message, ours, theirs = str(e.value), fitted[0].spec.backbone, backbone_name(other)
    assert ours != theirs and ours in message and theirs in message
    assert "\n" not in message and "refit" in message


def test_saved_model_is_a_ddpo_reward_by_name(fitted, world, clip, tmp_path):
    from rlhf.ddpo.rewards import make_reward

    model = fitted[0]
    reward = make_reward(f"preference:{model.save(tmp_path / 'rm')}", clip)
    images, prompts = _images(world["pool"][:8])
    got, info = reward(np.stack(images), prompts, [{}] * 8)
    np.testing.assert_array_equal(got, model(np.stack(images), prompts, [{}] * 8)[0])
    assert "rm/std" in info
