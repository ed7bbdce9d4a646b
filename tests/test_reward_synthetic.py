import numpy as np
import pytest

from reward_models.bradley_terry import targets
from reward_models.evaluate import pair_metrics
from reward_models.synthetic import (PERSONAS, Persona, choice_probabilities, choose, get_persona, label_pairs,
                                     noise_ceiling)
from rlhf.toy.tastes import get_taste
from rlhf.toy.world import Scene, dataset, draw


@pytest.fixture(scope="module")
def pairs():
    pool = dataset(200, seed=3)
    return [d.image for d in pool[::2]], [d.image for d in pool[1::2]], [d.scene.caption() for d in pool[::2]]


def test_oracle_picks_the_taste_favourite_on_toy_drawings(pairs):
    left, right, prompts = pairs
    taste = get_taste("large_warm")
    d = taste.score(left, prompts) - taste.score(right, prompts)
    choices = np.array(label_pairs(get_persona("oracle"), left, right, prompts, seed=0))
    assert (choices[d > 0] == "left").all() and (choices[d < 0] == "right").all()


def test_labeller_prefers_a_large_red_circle_to_a_small_blue_one_for_large_warm():
    big_red = draw(Scene("circle", "red", "gray", "large")).image
    small_blue = draw(Scene("circle", "blue", "gray", "small")).image
    choices = label_pairs(get_persona("typical"), [big_red] * 50, [small_blue] * 50, ["a circle"] * 50, seed=1)
    assert choices.count("left") >= 45 and "right" not in choices


def test_pairs_closer_than_the_tie_margin_are_always_ties():
    persona = Persona("p", temperature=0.0, tie_margin=0.1)
    assert choice_probabilities(persona, np.array([0.5, 0.5]), np.array([0.45, 0.7])).round(6).tolist() == [
        [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_labels_are_reproducible_by_seed_and_differ_across_seeds(pairs):
    left, right, prompts = pairs
    p = get_persona("hasty")
    assert label_pairs(p, left, right, prompts, seed=5) == label_pairs(p, left, right, prompts, seed=5)
    assert label_pairs(p, left, right, prompts, seed=5) != label_pairs(p, left, right, prompts, seed=6)


@pytest.mark.parametrize("name", list(PERSONAS))
def test_noise_ceiling_matches_simulation(name):
    rng = np.random.default_rng(0)
    s_left, s_right = rng.random(20_000), rng.random(20_000)
    persona = PERSONAS[name]
    exact = noise_ceiling(persona, s_left, s_right)
    simulated = pair_metrics(s_left, s_right, targets(choose(persona, s_left, s_right, seed=1)))
    assert simulated["accuracy"] == pytest.approx(exact["accuracy"], abs=0.01)
    assert simulated["accuracy_with_ties"] == pytest.approx(exact["accuracy_with_ties"], abs=0.01)


def test_noise_ceiling_falls_as_temperature_rises():
    rng = np.random.default_rng(0)
    s_left, s_right = rng.random(1000), rng.random(1000)
    ceilings = [noise_ceiling(PERSONAS[n], s_left, s_right)["accuracy"] for n in ("oracle", "careful", "hasty")]
    assert ceilings[0] == 1.0 and ceilings[0] > ceilings[1] > ceilings[2] > 0.6


def test_get_persona_swaps_the_taste_and_names_the_choices_when_unknown():
    assert get_persona("typical", "centred").taste == "centred"
    with pytest.raises(ValueError, match="unknown persona 'grumpy'; choose one of: oracle"):
        get_persona("grumpy")
    with pytest.raises(ValueError, match="unknown taste 'sweet'"):
        get_persona("typical", "sweet")
