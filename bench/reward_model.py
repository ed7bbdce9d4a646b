"""How good the reward model gets per label, and how many labels active pair selection saves.

    python bench/reward_model.py [--seeds 5] [--prompts 200] [--per-prompt 16]

The toy world stands in for a round of sampling: each prompt gets many candidate drawings that follow it only
partly (each attribute kept with probability FOLLOW, else random), so images of one prompt differ in size and
colour as a diffusion model's samples would. A synthetic 'typical' labeller with the large_warm taste labels the
chosen pairs. Every accuracy is the expected accuracy on that labeller's decisive labels over all same-prompt
pairs of separate held-out prompts and images, computed exactly from its choice probabilities (as
``noise_ceiling`` is), so the curves carry no label-sampling noise of their own.

Random arm: the first n of one uniform order of pairs. Active arm: the first 100 of those, then rounds of
``fit_ensemble`` -> ``select_pairs`` (BATCH pairs, a quarter of them random) -> label -> refit. Medians over
seeds. Writes bench/results/reward_model.json and docs/reward_model_curve.png.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reward_models.active import candidate_pairs, select_pairs
from reward_models.bradley_terry import targets
from reward_models.embeddings import EmbeddingCache
from reward_models.ensemble import RewardModelConfig, fit_ensemble, train_reward_model
from reward_models.features import FeatureSpec
from reward_models.synthetic import Persona, choice_probabilities, choose, get_persona, noise_ceiling, taste_scores
from rlhf.models import load_clip
from rlhf.plot import line_chart
from rlhf.toy.world import Scene, draw, parse_caption, random_scene, toy_prompts

ROOT = Path(__file__).resolve().parent.parent
FOLLOW = 0.5
ATTRIBUTES = (("shape",), ("colour",), ("background",), ("size", "count", "position"))
BATCH = 50
SIZES = list(range(100, 1001, 100))


def variant(asked: Scene, rng: np.random.Generator) -> Scene:
    """A drawing a model might make for ``asked``: shape, colour, background and layout each kept or random."""
    while True:
        kept = {f: getattr(asked, f) for group in ATTRIBUTES if rng.random() < FOLLOW for f in group}
        scene = replace(random_scene(rng), **kept)
        if scene.colour != scene.background:
            return scene


def pool(n_prompts: int, per_prompt: int, seed: int,
         exclude: set[str] = frozenset()) -> tuple[list[str], list[np.ndarray]]:
    """``per_prompt`` candidate drawings for each of ``n_prompts`` distinct toy captions not in ``exclude``."""
    rng = np.random.default_rng(seed)
    prompts, images = [], []
    for caption in toy_prompts(n_prompts, seed, exclude):
        prompts += [caption] * per_prompt
        images += [draw(variant(parse_caption(caption), rng), rng).image for _ in range(per_prompt)]
    return prompts, images


def expected_accuracy(persona: Persona, taste_a: np.ndarray, taste_b: np.ndarray, diff: np.ndarray) -> float:
    """Expected share of the persona's decisive labels that agree with the sign of ``diff`` (0 scores half)."""
    p_a, p_b, _ = choice_probabilities(persona, taste_a, taste_b).T
    favours_a = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    return float((favours_a * p_a + (1 - favours_a) * p_b).sum() / (p_a + p_b).sum())


class World:
    """A candidate pool and the same-prompt pairs of held-out prompts: features and hidden taste scores."""

    def __init__(self, cache: EmbeddingCache, persona: Persona, n_prompts: int, per_prompt: int):
        spec = FeatureSpec(cache.backbone)
        self.persona = persona
        self.prompts, self.images = pool(n_prompts, per_prompt, seed=1)
        test_prompts, test_images = pool(max(n_prompts // 2, 1), per_prompt, seed=2, exclude=set(self.prompts))
        self.features = spec(cache.images(self.images), cache.texts(self.prompts))
        self.taste = taste_scores(persona, self.images, self.prompts)
        self.test_features = spec(cache.images(test_images), cache.texts(test_prompts))
        test_taste = taste_scores(persona, test_images, test_prompts)
        self.test_pairs = candidate_pairs(test_prompts)
        self.test_taste = test_taste[self.test_pairs[:, 0]], test_taste[self.test_pairs[:, 1]]

    def label(self, pairs: np.ndarray, seed: int) -> np.ndarray:
        return targets(choose(self.persona, self.taste[pairs[:, 0]], self.taste[pairs[:, 1]], seed))

    def fit(self, pairs: np.ndarray, labels: np.ndarray):
        return fit_ensemble(self.features[pairs[:, 0]], self.features[pairs[:, 1]], labels, RewardModelConfig())

    def accuracy(self, ensemble) -> float:
        score = ensemble.mean(self.test_features)
        diff = score[self.test_pairs[:, 0]] - score[self.test_pairs[:, 1]]
        return expected_accuracy(self.persona, *self.test_taste, diff)

    def noise_ceiling(self) -> float:
        return noise_ceiling(self.persona, *self.test_taste)["accuracy"]


def curves(world: World, seed: int, bar: tqdm) -> tuple[list[float], list[float]]:
    """Held-out accuracy at each of SIZES labels: random pairs, and active rounds of BATCH from the same start."""
    order = np.array([p[:2] for p in select_pairs(world.prompts, None, None, SIZES[-1], seed=seed)])
    labels = world.label(order, seed)
    random_acc = []
    for n in SIZES:
        random_acc.append(world.accuracy(world.fit(order[:n], labels[:n])))
        bar.update()
    pairs, y, active_acc = order[:SIZES[0]], labels[:SIZES[0]], []
    while True:
        ensemble = world.fit(pairs, y)
        bar.update()
        if len(pairs) in SIZES:
            active_acc.append(world.accuracy(ensemble))
        if len(pairs) == SIZES[-1]:
            return random_acc, active_acc
        step = seed * 10_000 + len(pairs)
        new = np.array([p[:2] for p in select_pairs(world.prompts, world.features, ensemble, BATCH,
                                                    exclude=set(map(tuple, pairs.tolist())), seed=step)])
        pairs, y = np.concatenate([pairs, new]), np.concatenate([y, world.label(new, step)])


def timing(clip, world: World, n: int = 2000) -> dict[str, float]:
    """Embedding time of n labelled pairs on an empty cache, then train + grouped-CV time once cached."""
    order = np.array([p[:2] for p in select_pairs(world.prompts, None, None, n, seed=0)])
    a, b = [world.images[i] for i in order[:, 0]], [world.images[i] for i in order[:, 1]]
    prompts = [world.prompts[i] for i in order[:, 0]]
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(folder, clip)
        t0 = time.perf_counter()
        cache.images(a), cache.images(b), cache.texts(prompts)
        t1 = time.perf_counter()
        train_reward_model(cache, a, b, prompts, world.label(order, 0))
        t2 = time.perf_counter()
    return {"embed_2000_s": round(t1 - t0, 1), "embedded_images_2000": len(set(order.ravel().tolist())),
            "train_eval_2000_s": round(t2 - t1, 1)}


def plot(random_acc: list[float], active_acc: list[float], ceiling: float, path: Path) -> None:
    """Both learning curves against the noise ceiling."""
    line_chart({"random pairs": (SIZES, random_acc), "active pairs": (SIZES, active_acc),
                "noise ceiling": ([SIZES[0], SIZES[-1]], [ceiling, ceiling])}, path,
               title="Held-out accuracy vs labels (median over seeds)", xlabel="labels", ylabel="accuracy")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=200, help="prompts in the candidate pool")
    parser.add_argument("--per-prompt", type=int, default=16, help="candidate images per prompt")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reward_model.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "reward_model_curve.png")
    args = parser.parse_args()
    if args.prompts * args.per_prompt * (args.per_prompt - 1) // 2 < 2000:
        parser.error("the pool needs at least 2000 same-prompt pairs for the timing: raise --prompts or --per-prompt")
    t0 = time.perf_counter()
    clip, persona = load_clip(), get_persona("typical", "large_warm")
    with tempfile.TemporaryDirectory() as folder:
        world = World(EmbeddingCache(folder, clip), persona, args.prompts, args.per_prompt)
    runs = []
    fits = len(SIZES) + (SIZES[-1] - SIZES[0]) // BATCH + 1  # per seed: random arm, then active arm
    with tqdm(total=args.seeds * fits, desc="learning curves", unit="fit") as bar:
        for seed in range(args.seeds):
            runs.append(curves(world, seed, bar))
    random_acc = np.median([r for r, _ in runs], axis=0).tolist()
    active_acc = np.median([a for _, a in runs], axis=0).tolist()
    reached = [n for n, acc in zip(SIZES, active_acc) if acc >= random_acc[-1]]
    ceiling = world.noise_ceiling()
    result = {
        "persona": {"name": persona.name, "taste": persona.taste},
        "pool": {"prompts": args.prompts, "images_per_prompt": args.per_prompt, "follow": FOLLOW,
                 "held_out_pairs": len(world.test_pairs)},
        "seeds": args.seeds,
        "noise_ceiling": round(ceiling, 4),
        "accuracy_at_1000": round(random_acc[-1], 4),
        "active_accuracy_at_1000": round(active_acc[-1], 4),
        "active_label_fraction": reached[0] / SIZES[-1] if reached else None,
        **timing(clip, world),
        "labels": SIZES,
        "random": [round(a, 4) for a in random_acc],
        "active": [round(a, 4) for a in active_acc],
        "runtime_s": round(time.perf_counter() - t0),
        "random_per_seed": [[round(a, 4) for a in r] for r, _ in runs],
        "active_per_seed": [[round(a, 4) for a in a_] for _, a_ in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(random_acc, active_acc, ceiling, args.plot)
    print(f"noise ceiling {ceiling:.4f}; accuracy at 1000 random labels {random_acc[-1]:.4f} "
          f"({random_acc[-1] / ceiling:.1%} of the ceiling)")
    print("labels  " + " ".join(f"{n:>6}" for n in SIZES))
    print("random  " + " ".join(f"{a:.4f}" for a in random_acc))
    print("active  " + " ".join(f"{a:.4f}" for a in active_acc))
    print(f"active reaches random's 1000-label accuracy at {result['active_label_fraction']} of the labels; "
          f"embedding 2000 pairs {result['embed_2000_s']} s, train + grouped CV {result['train_eval_2000_s']} s; "
          f"total {result['runtime_s']} s")


if __name__ == "__main__":
    main()
