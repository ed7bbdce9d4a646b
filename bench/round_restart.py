"""Does DDPO from round r-1's policy raise round r's own learned reward? Run after `make demo`.

    python bench/round_restart.py [--round 2] [--settings '[{"kl_coef": 0.0}, {"learning_rate": 1e-3}]']

In the demo, round 2 gains nothing on the hidden score. This replays that round's DDPO phase from the round-1
policy against the round-2 reward model with other settings (each a `--set ddpo.<field>` override of the run's
own config, 10 epochs), and judges every policy on the demo's evaluation images (training prompts x held-out
seeds): the round's own learned reward (mean - lambda * std) and the hidden taste, with the paired change
over the starting policy and its standard error. Writes bench/results/round_restart.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.models import load_pipeline
from rlhf.paths import RUNS
from rlhf.round import evaluate
from rlhf.round.config import from_dict
from rlhf.round.labellers import parse_labeller
from rlhf.round.loop import Loop
from rlhf.toy.tastes import TASTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=RUNS / "demo")
    parser.add_argument("--round", type=int, default=2)
    parser.add_argument("--settings", default='[{"kl_coef": 0.0}, {"learning_rate": 1e-3}]',
                        help="JSON list of DDPO overrides, each replayed from the previous round's policy")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "round_restart.json")
    args = parser.parse_args()
    r = args.round
    loop = Loop(args.run_dir, from_dict({}))  # every call below takes the round's own config
    records = {rec.id: rec for rec in loop.rounds()}
    if records.get(r) is None or records[r].phase != "done":
        raise SystemExit(f"round {r} of {args.run_dir} is not finished; run `make demo` first")
    cfg = from_dict(records[r].config)
    eval_set = loop.eval_sets(cfg)[0]
    prompts, seeds = eval_set.jobs()
    taste, reward_model = TASTES[parse_labeller(cfg.labeller).persona.taste], loop.reward_model(r, cfg)

    def judge(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = reward_model.score(images, prompts)
        return taste.score(list(images), prompts), mean - std

    start_hidden, start_reward = judge(loop.eval_images(r - 1, cfg, eval_set))

    def row(name: str, images: np.ndarray, seconds: float | None = None) -> dict:
        hidden, reward = judge(images)
        change = evaluate.paired_change(hidden, start_hidden)
        out = {"policy": name, "learned_reward": round(float(reward.mean()), 4),
               "learned_reward_change": round(float((reward - start_reward).mean()), 4),
               "hidden": round(float(hidden.mean()), 4), "hidden_change": change["mean"], "hidden_change_se": change["se"]}
        print(json.dumps(out), flush=True)
        return out | ({"seconds": round(seconds, 1)} if seconds is not None else {})

    rows = [row(f"round {k} (demo)", loop.eval_images(k, cfg, eval_set)) for k in range(r - 1, r + 1)]
    for overrides in json.loads(args.settings):
        ddpo = cfg.ddpo_config(r).replace(**overrides, save_every=0)
        with tempfile.TemporaryDirectory() as run:
            trainer = DDPOTrainer(load_pipeline(cfg.pipeline), reward_model, ddpo, run)
            trainer.load_policy(loop.policy_checkpoint(r - 1))
            t0 = time.perf_counter()
            trainer.train(ddpo.num_epochs, progress=False)
            seconds = time.perf_counter() - t0
            images = evaluate.draw(trainer.pipe, trainer.unet, prompts, seeds, num_steps=ddpo.num_steps, eta=ddpo.eta,
                                   guidance_scale=ddpo.guidance_scale)
        rows.append(row(f"round {r} replayed with {overrides}", images, seconds) | {"overrides": overrides})
    args.out.write_text(json.dumps({
        "what": f"DDPO from round {r - 1}'s policy against round {r}'s reward model; changes are over round {r - 1}'s "
                f"policy on {len(prompts)} fixed-seed images (training prompts x held-out seeds); see bench/round_restart.py",
        "run_dir": str(args.run_dir), "round": r, "eval_images": len(prompts), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
