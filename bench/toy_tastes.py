"""Which hidden tastes can the loop learn on the toy pipeline? Within-prompt spread and reward-model accuracy.

    python bench/toy_tastes.py

DDPO's per-prompt advantages and a within-prompt Bradley-Terry model both see only how images *of the same
prompt* differ, so a taste is learnable only where the pipeline's samples of one prompt differ in it. Draws
12 images of each of the 16 training prompts with the shipped toy pipeline (the same sampler as DDPO), then per
taste: the mean within-prompt std of its score against the overall std, and the grouped-CV accuracy of the
default reward model (K=3) on 600 same-prompt pairs labelled by the "typical" persona. Writes
bench/results/toy_tastes.json.
"""
from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

from reward_models.bradley_terry import targets
from reward_models.embeddings import EmbeddingCache
from reward_models.ensemble import RewardModelConfig, train_reward_model
from reward_models.synthetic import get_persona, label_pairs
from rlhf.models import load_clip, load_pipeline
from rlhf.prompts import load_prompts
from rlhf.round.evaluate import draw
from rlhf.toy.tastes import TASTES

PER_PROMPT, PAIRS = 12, 600
OUT = Path(__file__).parent / "results" / "toy_tastes.json"


def main() -> None:
    pipe = load_pipeline()
    prompts = [p.text for p in load_prompts("toy_train")]
    batch = [p for p in prompts for _ in range(PER_PROMPT)]
    seeds = [i * 1000 + k for i in range(len(prompts)) for k in range(PER_PROMPT)]
    images = draw(pipe, pipe.unet, batch, seeds, num_steps=10, eta=1.0, guidance_scale=5.0)
    same_prompt = [(i * PER_PROMPT + a, i * PER_PROMPT + b)
                   for i in range(len(prompts)) for a, b in itertools.combinations(range(PER_PROMPT), 2)]
    pairs = [same_prompt[j] for j in np.random.default_rng(0).permutation(len(same_prompt))[:PAIRS]]
    left, right = [images[a] for a, _ in pairs], [images[b] for _, b in pairs]
    pair_prompts = [batch[a] for a, _ in pairs]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(folder, load_clip())
        for name, taste in TASTES.items():
            scores = taste.score(list(images), batch).reshape(len(prompts), PER_PROMPT)
            choices = label_pairs(get_persona("typical", name), left, right, pair_prompts)
            _, held_out = train_reward_model(cache, left, right, pair_prompts, targets(choices), RewardModelConfig(k=3))
            results[name] = {"within_prompt_std": round(float(scores.std(1).mean()), 4),
                             "overall_std": round(float(scores.std()), 4),
                             "tie_share": round(float(np.mean([c == "tie" for c in choices])), 3),
                             "rm_accuracy": round(held_out["accuracy"], 3)}
            print(f"{name:<18} " + "  ".join(f"{k} {v}" for k, v in results[name].items()), flush=True)
    OUT.write_text(json.dumps({"images_per_prompt": PER_PROMPT, "pairs": PAIRS, "persona": "typical",
                               "tastes": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
