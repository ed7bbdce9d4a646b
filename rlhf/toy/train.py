"""Retrain the toy world's models from scratch: ``python -m rlhf.toy.train [clip] [pipeline] [lcm]``.

Seeded and deterministic on a given machine. The CLIP comes first: the pipeline's text encoder is its text
tower; the LCM is distilled from the pipeline. Writes the models under ``data/models/`` and a summary of their
training beside them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlhf.paths import TOY_CLIP, TOY_LCM, TOY_PIPELINE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.toy.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", help="clip, pipeline, lcm; the default is clip and pipeline, e.g. python -m rlhf.toy.train pipeline")
    args = parser.parse_args(argv)
    if unknown := set(args.what) - {"clip", "pipeline", "lcm"}:  # not `choices`: argparse checks an empty list against them
        parser.error(f"unknown model {sorted(unknown)[0]!r}; choose clip, pipeline or lcm")
    args.what = args.what or ["clip", "pipeline"]
    summary = {}
    if "clip" in args.what:
        from rlhf.toy.train_clip import train_clip

        t0 = time.time()
        summary["clip"] = train_clip(TOY_CLIP) | {"minutes": (time.time() - t0) / 60}
        (TOY_CLIP / "training_summary.json").write_text(json.dumps(summary["clip"], indent=2))
    if "pipeline" in args.what:
        from rlhf.toy.train_pipeline import train_pipeline

        t0 = time.time()
        summary["pipeline"] = train_pipeline(TOY_PIPELINE) | {"minutes": (time.time() - t0) / 60}
        (TOY_PIPELINE / "training_summary.json").write_text(json.dumps(summary["pipeline"], indent=2))
    if "lcm" in args.what:
        from rlhf.toy.train_lcm import train_lcm

        t0 = time.time()
        summary["lcm"] = train_lcm(TOY_LCM) | {"minutes": (time.time() - t0) / 60}
        (TOY_LCM / "training_summary.json").write_text(json.dumps(summary["lcm"], indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
