from dataclasses import replace

import numpy as np
import pytest
import torch

from reward_models.active import candidate_pairs, pair_information, select_pairs
from reward_models.bradley_terry import targets
from reward_models.embeddings import EmbeddingCache
from reward_models.ensemble import HeadEnsemble, RewardModelConfig, fit_ensemble
from reward_models.features import FeatureSpec
from reward_models.heads import LinearHead
from reward_models.synthetic import choose, get_persona, taste_scores
from rlhf.models import load_clip
from rlhf.toy.world import draw, parse_caption, random_scene, toy_prompts


def _ensemble(weights: np.ndarray) -> HeadEnsemble:
    """Linear heads with the given (K, F) weights: a stand-in for a fitted ensemble."""
    heads = []
    for w in weights:
        head = LinearHead(len(w))
        with torch.no_grad():
            head.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None])
        heads.append(head.requires_grad_(False))
    return HeadEnsemble(heads)


def _world(n_prompts: int = 6, per_prompt: int = 5, dim: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompts = [f"prompt {i % n_prompts}" for i in range(n_prompts * per_prompt)]  # interleaved on purpose
    return prompts, rng.normal(size=(len(prompts), dim)), _ensemble(rng.normal(size=(5, dim)))


def _pairs(selection) -> list[tuple[int, int]]:
    return [(i, j) for i, j, _ in selection]


def test_pairs_share_a_prompt_are_ordered_and_never_repeat_or_come_from_exclude():
    prompts, features, ensemble = _world()
    exclude = {(0, 6), (12, 6)}  # either order
    picked = select_pairs(prompts, features, ensemble, 40, n_audit=5, exclude=exclude)
    assert len(picked) == 40 and len(set(_pairs(picked))) == 40
    assert all(i < j and prompts[i] == prompts[j] for i, j, _ in picked)
    assert not {(0, 6), (6, 12)} & set(_pairs(picked))
    everything = select_pairs(prompts, features, ensemble, len(candidate_pairs(prompts)))
    assert len(set(_pairs(everything))) == 6 * 10  # all C(5, 2) pairs of all six prompts


def test_selection_is_deterministic_given_the_seed():
    prompts, features, ensemble = _world()
    one = select_pairs(prompts, features, ensemble, 20, n_audit=4, seed=3)
    assert one == select_pairs(prompts, features, ensemble, 20, n_audit=4, seed=3)
    assert one != select_pairs(prompts, features, ensemble, 20, n_audit=4, seed=4)


def test_audit_set_is_fixed_by_the_seed_whatever_the_model_or_the_rest_of_the_request():
    prompts, features, ensemble = _world()
    other = _ensemble(np.random.default_rng(9).normal(size=(5, 4)))

    def audit(model, n_pairs, share, seed=0):
        return [p for p in select_pairs(prompts, features, model, n_pairs, random_share=share, n_audit=6, seed=seed)
                if p[2] == "audit"]

    first = audit(ensemble, 20, 0.25)
    assert len(first) == 6
    assert first == audit(other, 20, 0.25) == audit(None, 30, 0.25) == audit(ensemble, 12, 0.0)
    assert first != audit(ensemble, 20, 0.25, seed=1)


def test_without_a_model_every_non_audit_pair_is_random_and_with_one_a_share_is():
    prompts, features, ensemble = _world()
    tags = [t for *_, t in select_pairs(prompts, None, None, 20, n_audit=4)]
    assert tags == ["audit"] * 4 + ["random"] * 16
    tags = [t for *_, t in select_pairs(prompts, features, ensemble, 20, random_share=0.25, n_audit=4)]
    assert tags == ["audit"] * 4 + ["random"] * 4 + ["active"] * 12


def test_active_pairs_take_each_prompts_most_informative_pair_one_prompt_per_round():
    prompts, features, ensemble = _world(n_prompts=6)
    features[np.array(prompts) == "prompt 0"] *= 20  # heads disagree most on prompt 0's images
    pairs = candidate_pairs(prompts)
    info = pair_information(ensemble, features, pairs)
    top = pairs[np.argsort(-info)[:6]]
    assert sum(prompts[i] == "prompt 0" for i, _ in top) >= 5  # what ranking by information alone would pick
    for n_active, per_prompt in ((6, 1), (12, 2)):
        active = _pairs(select_pairs(prompts, features, ensemble, n_active, random_share=0))
        counts = {p: sum(prompts[i] == p for i, _ in active) for p in set(prompts)}
        assert set(counts.values()) == {per_prompt}, counts
    of_prompt = np.array(prompts)[pairs[:, 0]]
    best = {tuple(map(int, pairs[of_prompt == p][np.argmax(info[of_prompt == p])])) for p in set(prompts)}
    assert set(active[:6]) == best and active[0] == tuple(map(int, top[0]))  # round 1: each prompt's best


def test_information_vanishes_where_heads_agree_and_grows_with_confident_disagreement():
    features = np.array([[0.0], [1.0], [-1.0], [0.0]])
    pairs = np.array([[0, 3], [1, 2]])  # identical images, then two images the heads rank oppositely
    disagree = pair_information(_ensemble(np.array([[4.0], [-4.0]])), features, pairs)
    agree = pair_information(_ensemble(np.array([[4.0], [4.0]])), features, pairs)
    assert disagree[0] == pytest.approx(0) and disagree[1] > 0.5 and agree == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("kwargs, words", [
    (dict(prompts=["a", "a", "b"]), "single image"),
    (dict(n_pairs=4), "only 3"),
    (dict(n_audit=3, n_pairs=2), "n_audit"),
    (dict(random_share=1.5), "random_share"),
    (dict(features=np.zeros((4, 2))), "one row per image"),
    (dict(features=None), "needs the images' features"),
])
def test_bad_requests_get_a_one_line_value_error(kwargs, words):
    args = dict(prompts=["a"] * 3, features=np.zeros((3, 2)), ensemble=_ensemble(np.ones((2, 2))), n_pairs=2) | kwargs
    with pytest.raises(ValueError) as e:
        select_pairs(**args)
    assert words in str(e.value) and "\n" not in str(e.value)


# The toy world's learning curve: a candidate pool of POOL_PROMPTS prompts x PER_PROMPT drawings, labelled by the
# 'careful' persona (the 'typical' one's noise needs more seeds than a quick test can afford to show the gap).
POOL_PROMPTS, HELD_OUT_PROMPTS, PER_PROMPT, FOLLOW, PERSONA = 60, 30, 16, 0.5, "careful"
START, BATCH, BUDGET, MORE, SEEDS = 50, 25, 100, 150, range(6)
ATTRIBUTES = (("shape",), ("colour",), ("background",), ("size", "count", "position"))


def _toy_pool(n_prompts: int, seed: int, exclude: set[str] = frozenset()) -> tuple[list[str], list[np.ndarray]]:
    """PER_PROMPT drawings for each of n_prompts distinct captions, each keeping the caption's shape, colour,
    background and layout with probability FOLLOW (else random), as an imperfect model's samples would: images of
    one prompt differ in size and colour."""
    rng = np.random.default_rng(seed)
    prompts, images = [], []
    for caption in toy_prompts(n_prompts, seed, exclude):
        asked, scenes = parse_caption(caption), []
        while len(scenes) < PER_PROMPT:
            scene = replace(random_scene(rng), **{f: getattr(asked, f) for group in ATTRIBUTES
                                                  if rng.random() < FOLLOW for f in group})
            if scene.colour != scene.background:
                scenes.append(scene)
        prompts += [caption] * PER_PROMPT
        images += [draw(scene, rng).image for scene in scenes]
    return prompts, images


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Features and hidden taste of the candidate pool and of held-out prompts' drawings."""
    cache, persona = EmbeddingCache(tmp_path_factory.mktemp("embeddings"), load_clip()), get_persona(PERSONA)
    spec = FeatureSpec(cache.backbone)
    pool = _toy_pool(POOL_PROMPTS, seed=0)
    held_out = _toy_pool(HELD_OUT_PROMPTS, seed=1, exclude=set(pool[0]))
    return persona, {name: (prompts, spec(cache.images(images), cache.texts(prompts)),
                            taste_scores(persona, images, prompts))
                     for name, (prompts, images) in (("pool", pool), ("held_out", held_out))}


def _curves(toy, seed: int) -> tuple[dict[int, float], float]:
    """Held-out agreement with the hidden taste after n random labels, and after START random labels plus active
    batches up to BUDGET."""
    persona, data = toy
    prompts, features, taste = data["pool"]
    test_prompts, test_features, test_taste = data["held_out"]
    test_pairs = candidate_pairs(test_prompts)
    truth = np.sign(test_taste[test_pairs[:, 0]] - test_taste[test_pairs[:, 1]])

    def label(pairs, s):
        return targets(choose(persona, taste[pairs[:, 0]], taste[pairs[:, 1]], seed=s))

    def fit(pairs, y):
        return fit_ensemble(features[pairs[:, 0]], features[pairs[:, 1]], y, RewardModelConfig())

    def accuracy(ensemble):
        score = ensemble.mean(test_features)
        return float((np.sign(score[test_pairs[:, 0]] - score[test_pairs[:, 1]]) == truth)[truth != 0].mean())

    order = np.array(_pairs(select_pairs(prompts, None, None, MORE, seed=seed)))
    y = label(order, seed)
    pairs, labels = order[:START], y[:START]
    ensemble = fit(pairs, labels)
    random = {START: accuracy(ensemble)}
    while len(pairs) < BUDGET:
        new = np.array(_pairs(select_pairs(prompts, features, ensemble, BATCH, exclude=set(map(tuple, pairs.tolist())),
                                           seed=seed + len(pairs))))
        pairs, labels = np.concatenate([pairs, new]), np.concatenate([labels, label(new, seed + len(pairs))])
        ensemble = fit(pairs, labels)
    return random | {n: accuracy(fit(order[:n], y[:n])) for n in (BUDGET, MORE)}, accuracy(ensemble)


@pytest.fixture(scope="module")
def curves(toy):
    return [_curves(toy, seed) for seed in SEEDS]


def test_active_selection_beats_random_on_a_fixed_label_budget(curves):
    # measured on these 6 seeds with the striped-world CLIP: active beat random at 100 labels by -0.003 to +0.031
    # (mean +0.018) and came within -0.032 to +0.000 (mean -0.013) of random at 150. Random labels saturate near 0.88
    # by 150-200 labels on this pool, and there active no longer gains (mean +0.001 at 200, +0.003 at 300; the
    # earlier CLIP gave +0.013 at 300)
    gains = [active - random[BUDGET] for random, active in curves]
    assert min(gains) > -0.01 and np.mean(gains) > 0.008, gains
    assert np.mean([active - random[MORE] for random, active in curves]) > -0.02, curves


def test_more_labels_never_hurt_beyond_noise(curves):
    # 0.015: about the seed-to-seed spread (std) of held-out accuracy at 100-500 random labels
    for random, _ in curves:
        assert random[BUDGET] >= random[START] - 0.015 and random[MORE] >= random[BUDGET] - 0.015, random
