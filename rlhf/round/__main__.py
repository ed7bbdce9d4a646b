"""``python -m rlhf.round``: drive the RLHF loop one phase at a time, N rounds unattended, or the toy demo.

    python -m rlhf.round                      # run the current round's next phase and say where the loop stands
    python -m rlhf.round run --rounds 3 --labeller synthetic:large_warm
    python -m rlhf.round status | eval | demo
    python -m rlhf.round reconfigure --set ddpo.num_epochs=20   # change the unfinished round's settings
    accelerate launch -m rlhf.round run ...   # DDPO on several processes / GPUs

Settings: the preset, then --config FILE.toml, then each --set KEY=VALUE (DDPO settings as ddpo.KEY); every one
is typed and checked before any work starts. All of them, with defaults per preset: docs/config.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from rlhf.paths import ROOT, RUNS

DEMO_TASTE = "striped"
DEMO_ROUNDS = 3
DEMO_FOLLOWING_TOLERANCE = 2.0
"""points of prompt following (eval prompts) the demo may lose over its rounds"""
COMMANDS = {  # name: (help, example)
    "step": ("run the current round's next phase (the default command)", "python -m rlhf.round step --run-dir data/runs/mine"),
    "run": ("run phases until N rounds are done; returns (or, with --wait, polls) while people label",
            "python -m rlhf.round run --rounds 3 --labeller synthetic:large_warm"),
    "status": ("where every round stands", "python -m rlhf.round status --run-dir data/runs/demo"),
    "eval": ("re-evaluate every finished round and rewrite the reports", "python -m rlhf.round eval --run-dir data/runs/demo"),
    "demo": (f"start over in data/runs/demo: {DEMO_ROUNDS} toy rounds with synthetic:{DEMO_TASTE}", "python -m rlhf.round demo"),
    "reconfigure": ("replace the unfinished round's stored settings (its own, changed by --config / --set, or a "
                    "--preset's), keeping its images and labels", "python -m rlhf.round reconfigure --set ddpo.num_epochs=20"),
}


def _options(top: bool) -> argparse.ArgumentParser:
    """The options every command takes. Under a command they default to nothing (SUPPRESS), so that options given
    before the command (``--preset sd15 run``) are not overwritten by the command's defaults."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=default(RUNS),
                        help="run folder holding labels.db (default data/runs), e.g. --run-dir data/runs/mine")
    common.add_argument("--preset", default=default(None),
                        help="toy (the default, offline) or sd15 (SD 1.5 + ViT-L-14 by hub id), e.g. --preset sd15")
    common.add_argument("--config", type=Path, metavar="FILE.toml", default=default(None),
                        help="TOML file of settings applied over the preset, e.g. --config my_round.toml")
    common.add_argument("--set", action="append", default=default([]), metavar="KEY=VALUE",
                        help="override a setting, e.g. --set pairs_per_round=120 --set ddpo.num_epochs=30 (docs/config.md)")
    common.add_argument("--labeller", default=default(None), help="human or synthetic:<taste>[:<persona>] (same as "
                                                                  "--set labeller=...), e.g. --labeller synthetic:striped")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlhf.round", description=__doc__, parents=[_options(top=True)],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    commands = {name: sub.add_parser(name, parents=[_options(top=False)], help=text, description=f"{text}.\n\nExample: {example}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
                for name, (text, example) in COMMANDS.items()}
    commands["run"].add_argument("--rounds", type=int, required=True, help="rounds to finish in all, e.g. --rounds 3")
    commands["run"].add_argument("--wait", action="store_true",
                                 help="poll every 10 s while people label instead of returning, e.g. run --rounds 3 --wait")
    commands["demo"].add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo.json",
                                  help="where the demo's figures go (default bench/results/demo.json)")
    return parser


def resuming(run_dir: Path) -> bool:
    """Whether the run folder has an unfinished round, which runs with its own stored settings."""
    from rlhf.store import Store

    if not (run_dir / "labels.db").is_file():
        return False
    rounds = Store(run_dir / "labels.db", create=False).rounds()
    return bool(rounds) and rounds[-1].phase != "done"


def reconfigure(run_dir: Path, preset: str | None, file: Path | None, overrides: list[str]) -> str:
    """Replace the unfinished round's stored settings; its images, pairs and labels stay."""
    import dataclasses

    from rlhf.ddpo.config import DDPOConfig
    from rlhf.dpo.config import D3POConfig
    from rlhf.round.config import PRESETS, TABLES, ConfigError, RoundConfig, from_dict, merge
    from rlhf.round.loop import RoundError
    from rlhf.store import Store

    if not (run_dir / "labels.db").is_file():
        raise RoundError(f"no label store in {run_dir}: nothing to reconfigure (start a round with `python -m rlhf.round`)")
    store = Store(run_dir / "labels.db", create=False)
    rounds = store.rounds()
    if not rounds or rounds[-1].phase == "done":
        raise RoundError(f"{run_dir} has no unfinished round; the next round takes the settings of the command that starts it")
    current = rounds[-1]
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset is not None:
        base = PRESETS[preset].to_dict()
    else:  # its own settings, less any that this version no longer knows
        known = {f.name for f in dataclasses.fields(RoundConfig)}
        base = {k: v for k, v in current.config.items() if k in known}
        for table, cls in (("ddpo", DDPOConfig), ("dpo", D3POConfig)):
            fields = {f.name for f in dataclasses.fields(cls)}
            base[table] = {k: v for k, v in current.config.get(table, {}).items() if k in fields}
    config = from_dict(merge(base, file, overrides)).check_models().to_dict()
    store.set_round_config(current.id, config)

    def flat(c: dict) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in c.items() if k not in TABLES} | {
            f"{t}.{k}": json.dumps(v) for t in TABLES for k, v in c.get(t, {}).items()}

    old, new = flat(current.config), flat(config)
    changed = [f"{k}={new.get(k, '(removed)')}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    return (f"round {current.id} (phase {current.phase}): settings replaced ({', '.join(changed) or 'no change'}); "
            "its images, pairs and labels are kept")


def status_lines(loop) -> list[str]:
    from rlhf.round.labellers import label_coverage

    rounds = loop.rounds()
    if not rounds:
        return [f"{loop.run_dir}: no rounds yet; `python -m rlhf.round` starts round 1 (sampling)"]
    lines = [f"{loop.run_dir}:"]
    for r in rounds:
        labelled, queued = label_coverage(loop.store, r.id)
        lines.append(f"  round {r.id}: phase {r.phase:<6}  images {len(loop.store.images(r.id)):>4}  "
                     f"pairs labelled {labelled}/{queued}  labeller {r.config.get('labeller')}")
    last = rounds[-1]
    lines.append("  next: " + ("start round %d" % (last.id + 1) if last.phase == "done" else f"round {last.id} {last.phase}"))
    return lines


def summary_table(loop) -> list[str]:
    """Hidden and learned scores per round from rounds.json (the same figures the report shows)."""
    path = loop.run_dir / "rounds.json"
    if not path.is_file():
        return []
    records = json.loads(path.read_text())["rounds"]
    if not records:
        return []
    key = "train_prompts/hidden_score"
    lines = [f"{'round':>5} {'labels':>6} {'RM acc':>6} {'hidden (train)':>14} {'hidden (eval)':>13} {'following':>9} {'learned':>8}"]
    rows = [(0, records[0], "base")] + [(r["round"], r, "policy") for r in records]
    for number, r, model in rows:
        def get(metric):
            value = r.get(f"judge/{model}/{metric}")
            return float("nan") if value is None else value
        lines.append(f"{number:>5} {r['rm/labels'] if model == 'policy' else '-':>6} "
                     f"{r['rm/accuracy'] if model == 'policy' else float('nan'):>6.3f} {get(key):>14.4f} "
                     f"{get('eval_prompts/hidden_score'):>13.4f} {get('eval_prompts/prompt_following'):>9.4f} "
                     f"{get('train_prompts/learned_reward'):>+8.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from reward_models.ensemble import BackboneMismatch
    from rlhf.ddpo.trainer import CheckpointError
    from rlhf.models import ModelLoadError
    from rlhf.prompts import PromptFileError
    from rlhf.round import report
    from rlhf.round.config import ConfigError, load_config
    from rlhf.round.loop import Loop, RoundError
    from rlhf.store import StoreError

    command = args.command or "step"
    overrides = list(args.set)
    run_dir = args.run_dir
    if command == "demo":
        run_dir = RUNS / "demo" if args.run_dir == RUNS else args.run_dir
        overrides = [f"labeller=synthetic:{DEMO_TASTE}"] + overrides
    if args.labeller:
        overrides.append(f"labeller={args.labeller}")
    try:
        if command == "reconfigure":
            print(reconfigure(run_dir, args.preset, args.config, overrides))
            return 0
        config = load_config(args.preset or "toy", args.config, overrides)
        if command in ("step", "run", "demo") and (command == "demo" or not resuming(run_dir)):
            config.check_models()  # a new round's models, found before its folder or store is made
        if command == "demo":
            shutil.rmtree(run_dir, ignore_errors=True)
        loop = Loop(run_dir, config)
        if command == "status":
            print("\n".join(status_lines(loop)))
            return 0
        if command == "eval":
            for r in loop.rounds():
                if r.phase == "done":
                    loop.evaluate(r.id, loop.stored_config(r))
            print(f"report: {report.write(loop)}")
            print("\n".join(summary_table(loop)))
            return 0
        start = time.perf_counter()
        if command == "step":
            outcomes = [loop.step()]
        else:
            outcomes = loop.run(DEMO_ROUNDS if command == "demo" else args.rounds, wait=getattr(args, "wait", False))
        if loop.state.is_main_process:
            for o in outcomes:
                print(f"round {o.round_id} {o.phase}: {o.message}" if not o.waiting else f"round {o.round_id}: waiting for labels")
            print("\n".join(status_lines(loop) + summary_table(loop)))
            if (loop.run_dir / "report.md").is_file():
                print(f"report: {loop.run_dir / 'report.md'}")
            if command == "demo":
                write_demo(loop, args.out, (time.perf_counter() - start) / 60)
    except (RoundError, ConfigError, ModelLoadError, StoreError, PromptFileError, CheckpointError, BackboneMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def hidden_gains(loop, rounds: int) -> list[dict]:
    """Each round's change in the hidden taste score (synthetic labeller) over the previous round's policy, on the
    same training prompts and held-out seeds, with its paired standard error: is a round's rise above the noise?"""
    from rlhf.round.config import from_dict
    from rlhf.round.evaluate import paired_change
    from rlhf.round.labellers import parse_labeller
    from rlhf.toy.tastes import TASTES

    records = {r.id: r for r in loop.rounds()}
    scores = {}  # a round's images serve as its own "after" and as the next round's "before": score them once

    def score(round_id: int, cfg, taste_name: str, eval_set):
        key = (round_id, taste_name, eval_set.name, eval_set.seeds, tuple(eval_set.prompts))
        if key not in scores:
            images = loop.eval_images(round_id, cfg, eval_set)
            scores[key] = TASTES[taste_name].score(list(images), eval_set.jobs()[0])
        return scores[key]

    gains = []
    for round_id in range(1, rounds + 1):
        cfg = from_dict(records[round_id].config)  # both policies on this round's eval set, so images pair up
        taste_name, eval_set = parse_labeller(cfg.labeller).persona.taste, loop.eval_sets(cfg)[0]
        gains.append(paired_change(score(round_id, cfg, taste_name, eval_set),
                                   score(round_id - 1, cfg, taste_name, eval_set)))
    return gains


def write_demo(loop, out: Path, minutes: float) -> None:
    """The demo's acceptance figures: hidden score and prompt following per round (0 = base) and the wall time."""
    from rlhf.round.config import from_dict
    from rlhf.round.labellers import parse_labeller

    records = json.loads((loop.run_dir / "rounds.json").read_text())["rounds"]
    models = [("base", records[0])] + [("policy", r) for r in records]
    labeller = from_dict(loop.rounds()[0].config).labeller
    figures = {
        "rounds": len(records), "taste": parse_labeller(labeller).persona.taste, "labeller": labeller,
        "minutes": round(minutes, 2),
        "hidden_score": [r[f"judge/{m}/train_prompts/hidden_score"] for m, r in models],
        "hidden_score_eval_prompts": [r[f"judge/{m}/eval_prompts/hidden_score"] for m, r in models],
        "prompt_following": [r[f"judge/{m}/eval_prompts/prompt_following"] for m, r in models],
        "learned_reward_base_policy": [[r["judge/base/train_prompts/learned_reward"], r["judge/policy/train_prompts/learned_reward"]]
                                       for r in records],
        "hidden_gain_per_round": hidden_gains(loop, len(records)),
        "rm_accuracy": [r["rm/accuracy"] for r in records],
        "rm_audit_accuracy": [r.get("rm/audit_accuracy") for r in records],
        "labels": [r["rm/labels"] for r in records],
    }
    gains, following = figures["hidden_gain_per_round"], figures["prompt_following"]
    figures["rose_every_round"] = all(g["mean"] > 0 for g in gains)
    figures["prompt_following_change_points"] = round(100 * (following[-1] - following[0]), 2)
    figures["accepted"] = figures["rose_every_round"] and figures["prompt_following_change_points"] >= -DEMO_FOLLOWING_TOLERANCE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print("hidden score change per round, training prompts x held-out seeds (mean +- se): "
          + ", ".join(f"{g['mean']:+.4f} +- {g['se']:.4f}" for g in gains)
          + f"; rose every round: {'yes' if figures['rose_every_round'] else 'NO'}; prompt following "
          f"{figures['prompt_following_change_points']:+.2f} points (tolerance {DEMO_FOLLOWING_TOLERANCE:g})")
    print(f"demo: {DEMO_ROUNDS} rounds in {minutes:.1f} min; figures in {out}; report in {loop.run_dir / 'report.md'}. "
          "Label a round yourself: python -m rlhf.round run --rounds 1 --run-dir data/runs/mine, then "
          "RLHF_DB=data/runs/mine/labels.db streamlit run app/label.py")


if __name__ == "__main__":
    sys.exit(main())
