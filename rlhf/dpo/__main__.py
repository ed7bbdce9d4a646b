"""Train Diffusion-DPO (or D3PO) on labelled pairs alone, without a round or a reward model.

    python -m rlhf.dpo --pairs labels.jsonl --images data            # a store's export (python -m rlhf.store export)
    python -m rlhf.dpo --pairs pickapic.parquet --model stable-diffusion-v1-5/stable-diffusion-v1-5 --preset reference
    python -m rlhf.dpo --method d3po --pairs labels.jsonl --images data   # pairs a d3po round sampled
    accelerate launch -m rlhf.dpo --pairs ...                        # several processes / GPUs

Rows are Pick-a-Pic's: caption, image_0/image_1 (paths, relative to --images) or jpg_0/jpg_1 (image bytes),
label_0/label_1; ties, 'both bad' and skips are left out. D3PO also needs each image's sampling trajectory, which a
round with method d3po keeps beside it. The LoRA lands in RUN_DIR/checkpoints/step-NNNNNN, loadable with
``pipe.load_lora_weights(folder)``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlhf.dpo.config import METHOD_PRESETS
from rlhf.paths import RUNS, TOY_PIPELINE
from rlhf.settings import parse_override


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.dpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="a .jsonl or .parquet of Pick-a-Pic rows, e.g. --pairs labels.jsonl")
    parser.add_argument("--images", type=Path, help="the folder image paths are relative to (default: the pairs file's), "
                                                    "e.g. --images data for a store in data/runs")
    parser.add_argument("--model", default=str(TOY_PIPELINE), help="pipeline folder or hub id org/name[@revision] "
                                                                   "(default: the toy pipeline)")
    parser.add_argument("--method", default="diffusion_dpo", choices=sorted(METHOD_PRESETS),
                        help="diffusion_dpo (any labelled images; the default) or d3po (pairs with stored trajectories)")
    parser.add_argument("--preset", default="toy", choices=("reference", "toy"), help="settings to start from (default toy)")
    parser.add_argument("--steps", type=int, help="optimizer steps to run now (default: up to max_train_steps), e.g. --steps 50")
    parser.add_argument("--run-dir", type=Path, default=RUNS / "dpo", help="where checkpoints and metrics go")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting (docs/config.md), e.g. --set beta=2500 --set learning_rate=1e-4")
    args = parser.parse_args(argv)

    from rlhf.dpo.d3po import D3POTrainer, require_trajectories
    from rlhf.dpo.data import PairsError, read_pairs
    from rlhf.dpo.trainer import DiffusionDPOTrainer
    from rlhf.lora import CheckpointError, latest_checkpoint
    from rlhf.models import ModelLoadError, load_pipeline

    try:
        cfg = METHOD_PRESETS[args.method][args.preset].replace(**dict(map(parse_override, args.set))).validate()
        pairs, skipped = read_pairs(args.pairs, args.images)
        if args.method == "d3po":
            pairs = require_trajectories(pairs)
        trainer_class = D3POTrainer if args.method == "d3po" else DiffusionDPOTrainer
        trainer = trainer_class(load_pipeline(args.model), cfg, args.run_dir)
        if args.resume and (checkpoint := latest_checkpoint(args.run_dir)):
            trainer.load_checkpoint(checkpoint)
        history = trainer.train(pairs, args.steps)
        final = trainer.save_checkpoint() if trainer.saved_step != trainer.step else latest_checkpoint(args.run_dir)
    except (ModelLoadError, PairsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.accelerator.is_main_process and history:
        print(json.dumps({"method": args.method, "pairs": len(pairs), "left_out": dict(skipped), "steps": trainer.step,
                          "loss_first_step": round(history[0]["dpo/loss"], 4), "loss_last_step": round(history[-1]["dpo/loss"], 4),
                          "implicit_acc_last_step": history[-1]["dpo/implicit_acc"], "checkpoint": str(final),
                          "metrics": str(args.run_dir / "metrics.jsonl")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
