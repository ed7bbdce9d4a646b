"""Which hidden tastes can the reward model's CLIP features see at all, within one prompt?

    python bench/clip_probe.py                                       # the shipped toy models, 40 s on 2 cores
    python bench/clip_probe.py --clip CLIP_FOLDER --out x.json       # a candidate CLIP, before shipping it
    python bench/clip_probe.py --pipeline SD_FOLDER --out x.json     # a candidate pipeline

A reward model learns only what its frozen CLIP features carry. This asks that of the features directly, with no
labels and no labeller noise: it draws 48 images of each of the 16 training prompts with the toy pipeline (the
DDPO sampler), removes each prompt's mean from both the reward model's features (``reward_models.features.phi``)
and each taste's scores, and fits a ridge regression from the one to the other, scored on held-out seeds (4 folds
of the seeds, every prompt in every fold). The R^2 is the share of a taste's within-prompt variance the features
explain linearly; near 0, no amount of labels will teach the reward model that taste. Writes
bench/results/clip_probe.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from reward_models.features import backbone_name, phi
from rlhf.models import load_clip, load_pipeline
from rlhf.paths import TOY_CLIP, TOY_PIPELINE
from rlhf.prompts import load_prompts
from rlhf.round.evaluate import draw
from rlhf.toy.tastes import TASTES

PER_PROMPT, FOLDS, SEED0 = 48, 4, 50_000
OUT = Path(__file__).parent / "results" / "clip_probe.json"


def within_prompt(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x`` less the mean of its prompt's rows."""
    means = np.stack([x[groups == g].mean(0) for g in range(groups.max() + 1)])
    return x - means[groups]


def probe_r2(features: np.ndarray, target: np.ndarray, folds: np.ndarray) -> float:
    """Held-out R^2 of a ridge regression (penalty chosen by inner CV on each training split)."""
    pred = np.zeros_like(target)
    for f in range(folds.max() + 1):
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(features[folds != f], target[folds != f])
        pred[folds == f] = model.predict(features[folds == f])
    return float(1 - ((target - pred) ** 2).sum() / (target**2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(TOY_CLIP), help="open_clip folder (default: the shipped toy CLIP)")
    parser.add_argument("--pipeline", default=str(TOY_PIPELINE), help="diffusers folder (default: the toy pipeline)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    pipe, clip = load_pipeline(args.pipeline), load_clip(args.clip)
    prompts = [p.text for p in load_prompts("toy_train")]
    batch = [p for p in prompts for _ in range(PER_PROMPT)]
    seeds = [SEED0 + i * 1000 + k for i in range(len(prompts)) for k in range(PER_PROMPT)]
    images = draw(pipe, pipe.unet, batch, seeds, num_steps=10, eta=1.0, guidance_scale=5.0)
    features = phi(clip.embed_images(list(images)).cpu().numpy(), clip.embed_texts(batch).cpu().numpy())
    groups = np.repeat(np.arange(len(prompts)), PER_PROMPT)
    folds = np.tile(np.arange(PER_PROMPT) % FOLDS, len(prompts))
    features = within_prompt(features, groups)
    results = {}
    for name, taste in TASTES.items():
        target = within_prompt(taste.score(list(images), batch), groups)
        results[name] = {"within_prompt_std": round(float(target.std()), 4),
                         "probe_r2": round(probe_r2(features, target, folds), 3) if target.std() > 0 else None}
        print(f"{name:<18} " + "  ".join(f"{k} {v}" for k, v in results[name].items()), flush=True)
    args.out.write_text(json.dumps({"images_per_prompt": PER_PROMPT, "prompts": "toy_train", "folds": FOLDS,
                                    "features": f"reward_models.features.phi on {backbone_name(clip)}", "tastes": results},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
