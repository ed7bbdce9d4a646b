"""``python -m rlhf.round``: drive the RLHF loop one phase at a time, N rounds unattended, or the toy demo.

    python -m rlhf.round                      # run the current round's next phase and say where the loop stands
    python -m rlhf.round run --rounds 3 --labeller synthetic:large_warm
    python -m rlhf.round status | eval | demo
    accelerate launch -m rlhf.round run ...   # DDPO on several processes / GPUs
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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=RUNS, help="run folder holding labels.db (default data/runs)")
    common.add_argument("--preset", default="toy", help="toy (default, offline) or sd15")
    common.add_argument("--config", type=Path, help="TOML file of round settings, applied over the preset")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set pairs_per_round=120 --set ddpo.num_epochs=30")
    common.add_argument("--labeller", help="human or synthetic:<taste>[:<persona>] (same as --set labeller=...)")
    parser = argparse.ArgumentParser(prog="python -m rlhf.round", description=__doc__.splitlines()[0], parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("step", parents=[common], help="run the next phase (the default)")
    run = sub.add_parser("run", parents=[common], help="run until N rounds are done")
    run.add_argument("--rounds", type=int, required=True)
    run.add_argument("--wait", action="store_true", help="poll while people label instead of returning")
    sub.add_parser("status", parents=[common], help="where every round stands")
    sub.add_parser("eval", parents=[common], help="re-evaluate every finished round and rewrite the reports")
    demo = sub.add_parser("demo", parents=[common],
                          help=f"start over in data/runs/demo: {DEMO_ROUNDS} toy rounds with synthetic:{DEMO_TASTE}")
    demo.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo.json")
    return parser


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
    from rlhf.round.config import ConfigError, from_dict, load_config
    from rlhf.round.loop import Loop, RoundError
    from rlhf.store import StoreError

    command = args.command or "step"
    overrides = list(args.set)
    run_dir = args.run_dir
    if command == "demo":
        run_dir = RUNS / "demo" if args.run_dir == RUNS else args.run_dir
        overrides = [f"labeller=synthetic:{DEMO_TASTE}"] + overrides
        shutil.rmtree(run_dir, ignore_errors=True)
    if args.labeller:
        overrides.append(f"labeller={args.labeller}")
    try:
        loop = Loop(run_dir, load_config(args.preset, args.config, overrides))
        if command == "status":
            print("\n".join(status_lines(loop)))
            return 0
        if command == "eval":
            for r in loop.rounds():
                if r.phase == "done":
                    loop.evaluate(r.id, from_dict(r.config))
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
    print(f"demo: {DEMO_ROUNDS} rounds in {minutes:.1f} min; figures in {out}; "
          f"label them yourself: RLHF_DB={loop.run_dir / 'labels.db'} streamlit run app/label.py")


if __name__ == "__main__":
    sys.exit(main())
