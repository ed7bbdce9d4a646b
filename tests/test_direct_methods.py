"""Each direct method, in a whole toy round with the synthetic labeller `striped`, raises the hidden score on held-out
seeds: the labels reach the policy without the reward model, and in the direction of the labeller's taste."""
from __future__ import annotations

import numpy as np
import pytest

from rlhf.round import evaluate
from rlhf.round.config import load_config
from rlhf.round.loop import Loop

MARGIN = 0.005
"""The least mean rise in the striped score over the base on 128 held-out images; the measured rises at these
sizes are in docs/results/dpo_toy_sweep.md."""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["diffusion_dpo", "d3po"])
def test_one_round_of_a_direct_method_raises_the_hidden_score_on_held_out_seeds(tmp_path, method):
    loop = Loop(tmp_path / "runs", load_config("toy", overrides=[
        "labeller=synthetic:striped", f"method={method}", "images_per_prompt=8", "pairs_per_round=300",
        "eval_seeds=8", "eval_prompt_count=4", "eval_prompt_seeds=1"]))
    loop.run(1)
    cfg = loop.stored_config(loop.rounds()[0])
    prompts = loop.eval_sets(cfg)[0].jobs()[0]
    taste = evaluate.TASTES["striped"]
    base = taste.score(list(np.load(loop.run_dir / "eval" / "base-train_prompts.npy")), prompts)
    policy = taste.score(list(np.load(loop.round_dir(1) / "eval-train_prompts.npy")), prompts)
    change = evaluate.paired_change(policy, base)
    assert len(prompts) == 128
    assert change["mean"] > MARGIN and change["mean"] > 3 * change["se"], change
