"""Fine-tune a diffusion pipeline against a reward with DDPO.

    python -m rlhf.ddpo --reward taste:large_warm --epochs 20             # toy world, CPU
    accelerate launch -m rlhf.ddpo --model runwayml/stable-diffusion-v1-5 --preset reference \\
        --reward aesthetic:sac+logos+ava1-l14-linearMSE.pth --clip ViT-L-14 --prompts drawbench
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlhf.ddpo.config import PRESETS
from rlhf.paths import RUNS, TOY_CLIP, TOY_PIPELINE
from rlhf.settings import parse_override


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.ddpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TOY_PIPELINE),
                        help="pipeline folder or hub id org/name[@revision] (default: the toy pipeline), "
                             "e.g. --model stable-diffusion-v1-5/stable-diffusion-v1-5")
    parser.add_argument("--clip", default=str(TOY_CLIP),
                        help="open_clip folder, architecture or hub id, for CLIP-based rewards, e.g. --clip ViT-L-14")
    parser.add_argument("--clip-pretrained", default=None, help="pretrained tag or weights file of --clip, e.g. openai")
    parser.add_argument("--reward", default="taste:large_warm",
                        help="jpeg_compressibility, jpeg_incompressibility, clip_score, aesthetic:<weights>, "
                             "hpsv2:<weights>, taste:<name> or preference:<reward model folder>, e.g. --reward taste:striped")
    parser.add_argument("--prompts", default="toy_train", help="prompt set name or .txt/.csv file, e.g. --prompts drawbench")
    parser.add_argument("--preset", default="toy", choices=sorted(PRESETS), help="DDPO settings to start from (default toy)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs to run now (default: the config's num_epochs), e.g. --epochs 20")
    parser.add_argument("--run-dir", type=Path, default=RUNS / "ddpo", help="where checkpoints, metrics and grids go")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a DDPO setting (docs/config.md), e.g. --set learning_rate=1e-4")
    args = parser.parse_args(argv)

    from rlhf.ddpo.rewards import NonFiniteReward, make_reward
    from rlhf.ddpo.trainer import CheckpointError, DDPOTrainer
    from rlhf.lora import latest_checkpoint
    from rlhf.models import ModelLoadError, load_clip, load_pipeline
    from rlhf.prompts import PromptFileError, load_prompts

    try:
        prompts = [p.text for p in load_prompts(args.prompts)]
        cfg = PRESETS[args.preset].replace(prompts=prompts, **dict(map(parse_override, args.set))).validate()
        needs_clip = args.reward.split(":")[0] in ("clip_score", "aesthetic", "preference")
        clip = load_clip(args.clip, args.clip_pretrained) if needs_clip else None
        reward = make_reward(args.reward, clip)
        trainer = DDPOTrainer(load_pipeline(args.model), reward, cfg, args.run_dir)
        if args.resume and (ckpt := latest_checkpoint(args.run_dir)):
            trainer.load_checkpoint(ckpt)
        history = trainer.train(args.epochs)
        final = trainer.save_checkpoint()
    except (ModelLoadError, PromptFileError, CheckpointError, NonFiniteReward, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if trainer.accelerator.is_main_process and history:
        first, last = history[0]["reward/mean"], history[-1]["reward/mean"]
        print(json.dumps({"epochs": trainer.epoch, "reward_first_epoch": round(first, 4), "reward_last_epoch": round(last, 4),
                          "seconds_per_epoch": round(sum(h["time/epoch_s"] for h in history) / len(history), 2),
                          "checkpoint": str(final), "metrics": str(args.run_dir / "metrics.jsonl"),
                          "grids": str(args.run_dir / "grids")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
