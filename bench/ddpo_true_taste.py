"""How far can 10 epochs of the toy preset move a hidden taste when the reward is that taste itself?

    python bench/ddpo_true_taste.py [--taste placed] [--seeds 1 2] [--long 30] [--wide 10]   # 27 min on 2 cores
    python bench/ddpo_true_taste.py --taste true_colour --seeds 1 2 --long 10 --wide 0      # 7 min

The rounds demo asks each round's DDPO to raise a hidden taste's score from a learned model of it; a round cannot
be expected to gain more than DDPO gains from the true taste. This trains the rounds' DDPO settings (toy preset, KL
0.03 to the base, the state baseline, 10 epochs) from the base model against ``taste:<taste>`` with LoRA on the
attention projections (the default) and, for ``--wide`` epochs, with LoRA on the convolutions, projections and
feed-forwards as well, and scores the rounds' 256 held-out images (16 training prompts x 16 eval seeds) before and
after, paired by seed, with their prompt following. The attention-LoRA runs go on to ``--long`` epochs, judged
every 10, to show what more samples buy. Writes bench/results/ddpo_true_taste_<taste>.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rlhf.ddpo.config import PRESETS
from rlhf.ddpo.rewards import TasteReward
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.models import load_pipeline
from rlhf.round import evaluate
from rlhf.round.config import RoundConfig
from rlhf.toy.tastes import TASTES

ATTENTION = PRESETS["toy"].lora_targets
WIDE = (*ATTENTION, "conv1", "conv2", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taste", default="placed", choices=list(TASTES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--long", type=int, default=30, help="epochs of the attention-LoRA runs (judged every 10)")
    parser.add_argument("--wide", type=int, default=10, help="epochs of the wide-LoRA runs (0: none)")
    parser.add_argument("--out", type=Path, help="default bench/results/ddpo_true_taste_<taste>.json")
    args = parser.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"ddpo_true_taste_{args.taste}.json"
    cfg = RoundConfig().ddpo_config()  # the rounds' DDPO on toy_train: KL 0.03 and the state baseline
    eval_prompts, eval_seeds = evaluate.EvalSet("train_prompts", cfg.prompts, 16).jobs()  # the rounds' held-out seeds
    taste = TASTES[args.taste]

    def judge(pipe, unet):
        """The taste's score of each held-out image, and the eval set's prompt following."""
        images = evaluate.draw(pipe, unet, eval_prompts, eval_seeds, num_steps=cfg.num_steps, eta=cfg.eta,
                               guidance_scale=cfg.guidance_scale)
        return taste.score(list(images), eval_prompts), evaluate.prompt_following(images, eval_prompts)

    base = load_pipeline()
    before, following_before = judge(base, base.unet)
    rows = []
    for seed in args.seeds:
        for name, targets, epochs in (("attention", ATTENTION, args.long), ("attention+conv+proj+ff", WIDE, args.wide)):
            if epochs == 0:
                continue
            with tempfile.TemporaryDirectory() as run:
                trainer = DDPOTrainer(load_pipeline(), TasteReward(args.taste), cfg.replace(seed=seed, lora_targets=targets), run)
                seconds = 0.0
                while trainer.epoch < epochs:
                    t0 = time.perf_counter()
                    trainer.train(10, progress=False)
                    seconds += time.perf_counter() - t0
                    after, following = judge(trainer.pipe, trainer.unet)
                    change = evaluate.paired_change(after, before)
                    rows.append({"lora": name, "seed": seed, "epochs": trainer.epoch,
                                 "parameters": sum(p.numel() for p in trainer.params), "gain": change["mean"],
                                 "se": change["se"], "prompt_following_change_points":
                                 round(100 * (following - following_before), 2), "seconds": round(seconds)})
                    print(json.dumps(rows[-1]), flush=True)
    out.write_text(json.dumps({
        "what": f"toy preset, KL 0.03, state baseline, from the base against taste:{args.taste} itself; gain in "
                f"{args.taste} on the rounds' 256 held-out images paired by seed (16 training prompts x 16 eval seeds); "
                "see bench/ddpo_true_taste.py",
        "before": round(float(before.mean()), 4), "prompt_following_before": round(following_before, 4),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
