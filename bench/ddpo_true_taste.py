"""How far can 10 epochs of the toy preset move `placed` when the reward is the hidden taste itself?

    python bench/ddpo_true_taste.py [--seeds 1 2] [--long 30]    # about 27 min on 2 cores

The rounds demo asks each round's DDPO to raise the hidden `placed` score from a learned model of it; a round
cannot be expected to gain more than DDPO gains from the true taste. This trains the demo's DDPO settings (toy
preset, KL 0.03 to the base, 10 epochs) from the base model against `taste:placed` with LoRA on the attention
projections (the default) and with LoRA on the convolutions, projections and feed-forwards as well, and scores
256 held-out images (16 training prompts x 16 seeds never trained on) before and after, paired by seed. The
attention-LoRA runs go on to ``--long`` epochs, judged every 10, to show what three times a round's samples buy.
Writes bench/results/ddpo_true_taste.json.
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
from rlhf.prompts import load_prompts
from rlhf.round import evaluate
from rlhf.toy.tastes import TASTES

ATTENTION = PRESETS["toy"].lora_targets
WIDE = (*ATTENTION, "conv1", "conv2", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--long", type=int, default=30, help="epochs of the attention-LoRA runs (judged every 10)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddpo_true_taste.json")
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("toy_train")]
    eval_prompts = [p for p in prompts for _ in range(16)]
    eval_seeds = [900_000 + k for _ in prompts for k in range(16)]
    taste = TASTES["placed"]
    cfg = PRESETS["toy"].replace(prompts=prompts, kl_coef=0.03)

    def judge(pipe, unet):
        images = evaluate.draw(pipe, unet, eval_prompts, eval_seeds, num_steps=cfg.num_steps, eta=cfg.eta,
                               guidance_scale=cfg.guidance_scale)
        return taste.score(list(images), eval_prompts)

    base = load_pipeline()
    before = judge(base, base.unet)
    rows = []
    for seed in args.seeds:
        for name, targets, epochs in (("attention", ATTENTION, args.long), ("attention+conv+proj+ff", WIDE, 10)):
            with tempfile.TemporaryDirectory() as run:
                trainer = DDPOTrainer(load_pipeline(), TasteReward("placed"), cfg.replace(seed=seed, lora_targets=targets), run)
                seconds = 0.0
                while trainer.epoch < epochs:
                    t0 = time.perf_counter()
                    trainer.train(10, progress=False)
                    seconds += time.perf_counter() - t0
                    change = evaluate.paired_change(judge(trainer.pipe, trainer.unet), before)
                    rows.append({"lora": name, "seed": seed, "epochs": trainer.epoch,
                                 "parameters": sum(p.numel() for p in trainer.params), "gain": change["mean"],
                                 "se": change["se"], "seconds": round(seconds)})
                    print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({
        "what": "toy preset, KL 0.03, from the base against taste:placed itself; gain in placed on 256 "
                "held-out images paired by seed (16 training prompts x 16 seeds); see bench/ddpo_true_taste.py",
        "before": round(float(before.mean()), 4), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
