"""The evaluation's tables: per-model means with paired bootstrap intervals, paired win rates against the base,
the same per prompt category, as JSON and Markdown, and an image grid per category."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rlhf.evaluate.stats import bootstrap_indices, mean_interval, paired_comparison
from rlhf.grid import image_grid

PUBLISHED = {
    "SD 1.5 DDPO (published)": {"aesthetic": 5.67, "hpsv2": 0.2673, "text_alignment": 0.6024},
    "LCM DDPO (published)": {"aesthetic": 6.01, "hpsv2": 0.2803, "text_alignment": 0.5721},
}
"""DrawBench figures as published for DDPO-tuned SD 1.5 and LCM (200 prompts; LAION aesthetic, HPSv2, SentenceBERT
text alignment; no intervals given); not reproduced here"""
COMPARISONS = {"paper": PUBLISHED}
PAPER_METRICS = ("aesthetic", "hpsv2", "text_alignment")
"""the published table's columns, shown first"""


def summary(scores: dict[str, dict[str, np.ndarray]], metrics: list[str], units: np.ndarray | None = None,
            resamples: int = 1000) -> dict[str, dict]:
    """Per metric: each model's mean with its 95% interval and each later model's paired comparison with the first
    (the base), over the units ``units`` (all when None); one resample draw serves every model and metric."""
    first = next(iter(scores.values()))
    n = len(next(iter(first.values()))) if units is None else len(units)
    units = np.arange(n) if units is None else units
    idx = bootstrap_indices(n, resamples)
    names = list(scores)
    out = {}
    for metric in metrics:
        by_model = {m: mean_interval(scores[m][metric][units], idx) for m in names}
        vs_base = {m: paired_comparison(scores[m][metric][units], scores[names[0]][metric][units], idx) for m in names[1:]}
        out[metric] = {"by_model": by_model, "vs_base": vs_base}
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "all"


def category_grids(images: dict[str, np.ndarray], prompts: list[str], categories: list[str], seeds: int,
                   out: Path, per_category: int = 6) -> dict[str, str]:
    """One PNG per category: a row per model, the category's first prompts at their first seed."""
    files = {}
    for category in dict.fromkeys(categories):
        picks = [u for u in range(0, len(prompts), seeds) if categories[u] == category][:per_category]
        cells, captions = [], []
        for name, model_images in images.items():
            cells += [model_images[u] for u in picks]
            captions += [f"{name}: {prompts[u]}" if name == next(iter(images)) else name for u in picks]
        size = next(iter(images.values())).shape[1]
        path = out / f"grid-{slug(category)}.png"
        image_grid(cells, captions, cols=len(picks), cell=96 if size <= 64 else 192).save(path)
        files[category] = path.name
    return files


def cell(stats: dict) -> str:
    return f"{stats['mean']:.4f} [{stats['low']:.4f}, {stats['high']:.4f}]"


def win_cell(stats: dict) -> str:
    return f"{stats['win_rate']:.3f} [{stats['win_low']:.3f}, {stats['win_high']:.3f}], {stats['delta']:+.4f}"


def table(block: dict, titles: dict[str, str], models: list[str], published: dict[str, dict] | None = None) -> list[str]:
    """Markdown rows: a model per row, a metric per column, "mean [low, high]"; published rows after the user's."""
    columns = list(titles)
    lines = ["| model | " + " | ".join(titles[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cell(block[c]["by_model"][m]) if c in block else "–" for c in columns) + " |")
    for name, figures in (published or {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{figures[c]:g}" if c in figures else "–" for c in columns) + " |")
    return lines


def win_table(block: dict, titles: dict[str, str], models: list[str]) -> list[str]:
    columns = [c for c in titles if c in block]
    lines = ["| model | " + " | ".join(titles[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in models[1:]:
        lines.append(f"| {m} | " + " | ".join(win_cell(block[c]["vs_base"][m]) for c in columns) + " |")
    return lines


def markdown(result: dict) -> str:
    """The whole evaluation as Markdown: overall table, what was not computed and why, win rates, per category."""
    models = [m["name"] for m in result["models"]]
    computed = {k: v["title"] for k, v in result["metrics"].items() if v["status"] == "computed"}
    published = result.get("published")
    titles = ({k: result["metrics"][k]["title"] for k in PAPER_METRICS} | computed) if published else computed
    overall = {k: v for k, v in result["metrics"].items() if v["status"] == "computed"}
    p = result["prompts"]
    lines = [f"# Evaluation on {p['source']}: {p['count']} prompts x {result['seeds']} seeds", "",
             f"Mean over {result['units']} (prompt, seed) units with its 95% bootstrap interval; every model is drawn on "
             "the same seeds and the resamples are paired across models.", ""]
    lines += table(overall, titles, models, published)
    if published:
        lines += ["", "Rows marked (published) are figures as published (DrawBench, 200 prompts, no intervals), not "
                  "measured here."]
    missing = {k: v for k, v in result["metrics"].items() if v["status"] != "computed"}
    if missing:
        lines += ["", "Not computed:", ""] + [f"- {v['title']}: {v['reason']}" for v in missing.values()]
    if len(models) > 1 and computed:
        lines += ["", "## Paired win rate against the base", "",
                  "Share of units where the model scores above the base (ties count half) with its 95% interval, "
                  "then the mean change.", ""] + win_table(overall, computed, models)
    for category, block in result["per_category"].items():
        lines += ["", f"## {category} ({block['prompts']} prompts, {block['units']} units)", ""]
        lines += table(block["metrics"], computed, models)
        if len(models) > 1 and computed:
            lines += ["", "Win rate against the base, then the mean change:", ""] + win_table(block["metrics"], computed, models)
        if category in result.get("grids", {}):
            lines += ["", f"![{category}]({result['grids'][category]})"]
    return "\n".join(lines) + "\n"
