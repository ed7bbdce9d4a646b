"""Reports of the loop: per-round Markdown with before/after grids, the run's summary table and curves, and
``rounds.json`` for the app's dashboard (format in ``app/labelui/dashboard.py``)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reward_models.ensemble import MODEL_FILE
from rlhf.grid import image_grid
from rlhf.plot import line_chart
from rlhf.round.config import from_dict

if TYPE_CHECKING:
    from rlhf.round.loop import Loop

GRID_PROMPTS = 8
SUMMARY_COLUMNS = {  # column title: (eval set, metric)
    "learned reward": ("train_prompts", "learned_reward"),
    "hidden score (train prompts, held-out seeds)": ("train_prompts", "hidden_score"),
    "hidden score (eval prompts)": ("eval_prompts", "hidden_score"),
    "prompt following (eval prompts)": ("eval_prompts", "prompt_following"),
    "CLIP score (eval prompts)": ("eval_prompts", "clip_score"),
}


CURVES = {"ddpo": ("epoch", ("reward/mean", "judge/hidden")), "direct": ("step", ("dpo/loss", "dpo/implicit_acc"))}
"""What a training run's metrics.jsonl is indexed by, and the figures kept of it, for DDPO and the direct methods."""


def training_curves(metrics_file: Path, method: str) -> dict[str, list[float]]:
    """Per-epoch (DDPO) or per-step (direct methods) figures; one re-run after a crash counts once, with its last
    record."""
    index, keys = CURVES["ddpo" if method == "ddpo" else "direct"]
    by_index: dict[int, dict] = {}
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            record = json.loads(line)
            by_index[record[index]] = record
    records = [by_index[i] for i in sorted(by_index)]
    return {key: [r[key] for r in records] for key in keys if records and key in records[0]}


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def round_record(loop: Loop, round_id: int) -> dict | None:
    """What one evaluated round measured, under the dashboard's metric prefixes; None before its eval."""
    folder = loop.round_dir(round_id)
    if not (folder / "eval.json").is_file():
        return None
    result = json.loads((folder / "eval.json").read_text())
    card = json.loads((folder / "reward_model" / MODEL_FILE).read_text())
    method = loop.round_method(round_id)
    record = {"round": round_id, "method": method, "rm/labels": card["labels"], "rm/accuracy": card["held_out"]["accuracy"],
              "rm/accuracy_with_ties": card["held_out"]["accuracy_with_ties"], "rm/ece": card["held_out"]["ece"]}
    if "audit" in card:
        record |= {"rm/audit_accuracy": card["audit"]["accuracy"], "rm/audit_pairs": card["audit"]["pairs"]}
    record["rm/learning_curve"] = card.get("learning_curve", [])
    record |= training_curves(loop.train_dir(round_id) / "metrics.jsonl", method)
    for title, (eval_set, metric) in SUMMARY_COLUMNS.items():
        for model in ("base", "policy"):
            value = result[model][eval_set].get(metric)
            if value is not None:
                record[f"judge/{model}/{eval_set}/{metric}"] = value
    return record


def before_after(loop: Loop, round_id: int, prompts: list[str], seeds: int) -> Path:
    """Base (top row) and this round's policy (bottom row) on the same prompts and seeds."""
    base = np.load(loop.run_dir / "eval" / "base-train_prompts.npy")
    policy = np.load(loop.round_dir(round_id) / "eval-train_prompts.npy")
    idx = [i * seeds for i in range(min(GRID_PROMPTS, len(prompts)))]
    captions = [f"base: {prompts[i]}" for i in range(len(idx))] + [f"round {round_id}" for _ in idx]
    path = loop.round_dir(round_id) / "before_after.png"
    image_grid([base[i] for i in idx] + [policy[i] for i in idx], captions, cols=len(idx), cell=96).save(path)
    return path


def write_round(loop: Loop, round_id: int, record: dict) -> Path:
    folder = loop.round_dir(round_id)
    result = json.loads((folder / "eval.json").read_text())
    cfg = from_dict(next(r.config for r in loop.rounds() if r.id == round_id))
    choices = Counter(label.choice for label in loop.store.labels(round_id))
    before_after(loop, round_id, loop.eval_sets(cfg)[0].prompts, cfg.eval_seeds)
    lines = [f"# Round {round_id}", "",
             f"Labels this round: {sum(choices.values())} ({', '.join(f'{n} {c}' for c, n in sorted(choices.items()))}); "
             f"the reward model learned from {record['rm/labels']} labels of rounds 1-{round_id} (audit pairs held out).", "",
             f"Reward model: grouped-CV accuracy {record['rm/accuracy']:.3f} ({record['rm/accuracy_with_ties']:.3f} with ties), "
             f"ECE {record['rm/ece']:.3f}"
             + (f"; audit accuracy {record['rm/audit_accuracy']:.3f} on {record['rm/audit_pairs']} pairs." if "rm/audit_accuracy" in record else "."), ""]
    if record["rm/learning_curve"]:
        lines += ["Learning curve (grouped CV, one head): " + ", ".join(
            f"{p['labels']:.0f} labels {p['accuracy']:.3f}" for p in record["rm/learning_curve"]) + ".", ""]
    if (folder / "reward_model" / "reliability.png").is_file():
        lines += ["![reliability on audit pairs](reward_model/reliability.png)", ""]
    curve, loss = record.get("reward/mean", []), record.get("dpo/loss", [])
    if loss:
        accuracy = record["dpo/implicit_acc"]
        lines += [f"{record['method']}: {len(loss)} steps on the labelled pairs (the reward model is not used), loss "
                  f"{loss[0]:.4f} -> {loss[-1]:.4f}, implicit accuracy {accuracy[0]:.2f} -> {accuracy[-1]:.2f}.", ""]
    if curve:
        lines += [f"DDPO: {len(curve)} epochs, batch learned reward {curve[0]:+.3f} -> {curve[-1]:+.3f}"
                  + (f", batch hidden score {record['judge/hidden'][0]:.4f} -> {record['judge/hidden'][-1]:.4f}" if "judge/hidden" in record else ""), ""]
    lines += ["| metric | eval set | base | this round |", "|---|---|---|---|"]
    for eval_set in result["base"]:
        for metric, value in result["base"][eval_set].items():
            lines.append(f"| {metric} | {eval_set} | {_fmt(value)} | {_fmt(result['policy'][eval_set].get(metric))} |")
    lines += ["", "Same prompts and seeds, base above, this round below:", "", "![before and after](before_after.png)", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def write(loop: Loop) -> Path:
    """Rewrite every report from what the run folder holds (cheap, and never stale after a re-run)."""
    records = [r for r in (round_record(loop, x.id) for x in loop.rounds()) if r is not None]
    (loop.run_dir / "rounds.json").write_text(json.dumps({"rounds": records}, indent=2))
    for record in records:
        write_round(loop, record["round"], record)
    if records:
        _charts(loop, records)
    lines = ["# RLHF rounds", "", "Round 0 is the base model; every figure is on fixed seeds never used for training.", "",
             "| round | method | labels | RM accuracy | audit accuracy | " + " | ".join(SUMMARY_COLUMNS) + " |",
             "|---" * (5 + len(SUMMARY_COLUMNS)) + "|"]
    if records:
        base = [records[0].get(f"judge/base/{s}/{m}") for s, m in SUMMARY_COLUMNS.values()]
        lines.append("| 0 (base) | – | – | – | – | " + " | ".join(_fmt(v) for v in base) + " |")
    for r in records:
        cells = [r.get(f"judge/policy/{s}/{m}") for s, m in SUMMARY_COLUMNS.values()]
        lines.append(f"| [{r['round']}](round-{r['round']:03d}/report.md) | {r['method']} | {r['rm/labels']} | {r['rm/accuracy']:.3f} | "
                     f"{_fmt(r.get('rm/audit_accuracy'))} | " + " | ".join(_fmt(v) for v in cells) + " |")
    lines += ["", "The learned reward of each round is judged by that round's reward model, so it is comparable "
              "within a round (base vs policy), not across rounds.", "",
              "![scores per round](scores.png)", ""]
    if any(r.get("reward/mean") for r in records):
        lines += ["![DDPO learned reward](ddpo_learned.png)", "![DDPO hidden score](ddpo_hidden.png)", ""]
    path = loop.run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _charts(loop: Loop, records: list[dict]) -> None:
    rounds = [0] + [r["round"] for r in records]
    series = {}
    for label, key in (("hidden score, train prompts", "train_prompts/hidden_score"),
                       ("hidden score, eval prompts", "eval_prompts/hidden_score"),
                       ("prompt following, eval prompts", "eval_prompts/prompt_following")):
        values = [records[0].get(f"judge/base/{key}")] + [r.get(f"judge/policy/{key}") for r in records]
        if None not in values:
            series[label] = (rounds, values)
    if series:
        line_chart(series, loop.run_dir / "scores.png", title="Held-out scores per round (0 = base)",
                   xlabel="round", ylabel="score", integer_x=True)
    learned, hidden, offset = {}, {}, 0
    for r in records:
        curve = r.get("reward/mean", [])
        if not curve:
            continue
        epochs = list(range(offset + 1, offset + len(curve) + 1))
        learned[f"round {r['round']}"] = (epochs, curve)
        if "judge/hidden" in r:
            hidden[f"round {r['round']}"] = (epochs, r["judge/hidden"])
        offset += len(curve)
    if not learned:
        return
    line_chart(learned, loop.run_dir / "ddpo_learned.png", title="DDPO: learned reward of each epoch's samples",
               xlabel="epoch (all rounds)", ylabel="ensemble mean - lambda * std", integer_x=True)
    if hidden:
        line_chart(hidden, loop.run_dir / "ddpo_hidden.png", title="DDPO: hidden score of each epoch's samples",
                   xlabel="epoch (all rounds)", ylabel="hidden taste score", integer_x=True)
