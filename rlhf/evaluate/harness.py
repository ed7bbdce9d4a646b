"""An evaluation run: draw every (prompt, seed) for every model through the image cache, score each model's images
with every metric, and write the tables (``results.json``, ``results.md``) and the category grids."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhf.evaluate.images import ImageCache, Model, Sampler
from rlhf.evaluate.metrics import Judged, Metric, score
from rlhf.evaluate.report import category_grids, markdown, summary
from rlhf.prompts import Prompt
from rlhf.round.evaluate import EvalSet

UNCATEGORISED = "all prompts"


@dataclass(frozen=True)
class Absent:
    """A metric that cannot be computed here, with the one line saying why and how to supply it."""

    name: str
    title: str
    reason: str


@dataclass
class Evaluation:
    """What to evaluate: the models (the base first), the prompts and seeds, how to draw, and the judges in table
    order, each a metric or the reason it is absent."""

    models: list[Model]
    prompts: list[Prompt]
    prompt_source: str
    seeds: int
    sampler: Sampler
    judges: list[Metric | Absent]
    published: dict[str, dict] | None = None
    """rows of published figures shown beside the measured ones"""
    resamples: int = 1000
    grid_prompts: int = 6
    settings: dict = field(default_factory=dict)
    """what the command was given, recorded in the JSON"""

    def units(self) -> tuple[list[str], list[int], list[str]]:
        """(prompt, seed, category) of every unit, prompt-major; the seeds are the rounds' evaluation seeds."""
        prompts, seeds = EvalSet(self.prompt_source, [p.text for p in self.prompts], self.seeds).jobs()
        categories = [p.category or UNCATEGORISED for p in self.prompts for _ in range(self.seeds)]
        return prompts, seeds, categories


def draw_all(ev: Evaluation, cache: ImageCache, device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Every model's image of every unit, from the cache or drawn; (images by model, images drawn by model)."""
    prompts, seeds, _ = ev.units()
    images, drawn = {}, {}
    for model in ev.models:
        images[model.name], drawn[model.name] = cache.images(model, prompts, seeds, ev.sampler, device)
    return images, drawn


def score_all(ev: Evaluation, images: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray | None]]:
    """Every model's per-unit scores under every metric (None where a metric does not apply to the prompts)."""
    prompts = ev.units()[0]
    metrics = [j for j in ev.judges if not isinstance(j, Absent)]
    return {name: score(Judged(model_images, prompts), metrics) for name, model_images in images.items()}


def run(ev: Evaluation, out: Path, cache: ImageCache, device: torch.device) -> dict:
    """Draw, score, summarise; the result is also written to ``out`` (results.json, results.md, grid-*.png)."""
    prompts, seeds, categories = ev.units()
    start = time.perf_counter()
    images, drawn = draw_all(ev, cache, device)
    drawn_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = score_all(ev, images)
    scored_s = time.perf_counter() - start
    base = ev.models[0].name
    metrics: dict[str, dict] = {}
    for judge in ev.judges:
        if isinstance(judge, Absent):
            metrics[judge.name] = {"title": judge.title, "status": "absent", "reason": judge.reason}
        elif scores[base][judge.name] is None:
            metrics[judge.name] = {"title": judge.title, "status": "not applicable",
                                   "reason": f"applies to {judge.applies_to}; not to these prompts"}
        else:
            metrics[judge.name] = {"title": judge.title, "status": "computed"}
    computed = [k for k, v in metrics.items() if v["status"] == "computed"]
    values = {m: {k: scores[m][k] for k in computed} for m in scores}
    if computed:
        for name, block in summary(values, computed, resamples=ev.resamples).items():
            metrics[name] |= block
    cats = np.array(categories)
    per_category = {}
    for category in dict.fromkeys(categories):
        units = np.flatnonzero(cats == category)
        per_category[category] = {"prompts": len(units) // ev.seeds, "units": len(units),
                                  "metrics": summary(values, computed, units, ev.resamples) if computed else {}}
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "prompts": {"source": ev.prompt_source, "count": len(ev.prompts),
                    "categories": {c: b["prompts"] for c, b in per_category.items()}},
        "seeds": ev.seeds, "units": len(prompts), "sampler": vars(ev.sampler),
        "models": [{"name": m.name, "pipeline": m.pipeline, "policy": str(m.policy) if m.policy else None,
                    "images_drawn": drawn[m.name]} for m in ev.models],
        "metrics": metrics, "per_category": per_category,
        "grids": category_grids(images, prompts, categories, ev.seeds, out, ev.grid_prompts),
        "timing": {"draw_s": round(drawn_s, 3), "score_s": round(scored_s, 3), "images_drawn": sum(drawn.values()),
                   "images_scored": len(prompts) * len(ev.models),
                   "images_scored_per_s": round(len(prompts) * len(ev.models) / max(scored_s, 1e-9), 1)},
        "settings": ev.settings,
    }
    if ev.published:
        result["published"] = ev.published
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    return result
