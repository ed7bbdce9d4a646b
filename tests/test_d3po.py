"""D3PO: the loss against hand computations and its gradient at the start; a d3po round's stored trajectories
reproduce their images and log-probabilities; the trainer on them (first step at log 2, LoRA export, exact resume);
pairs without trajectories are refused with one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rlhf.adapters import PipelineAdapter
from rlhf.dpo.__main__ import main
from rlhf.dpo.config import D3PO_PRESETS
from rlhf.dpo.d3po import D3POTrainer, require_trajectories
from rlhf.dpo.data import PairsError, PreferencePair
from rlhf.dpo.loss import d3po_loss
from rlhf.dpo.trajectory import load_trajectory, trajectory_path
from rlhf.lora import LORA_FILE, latest_checkpoint
from rlhf.models import load_pipeline
from rlhf.round.loop import Loop
from test_round import DIRECT, tiny

T = torch.tensor
TINY = D3PO_PRESETS["toy"].replace(train_batch_size=2, save_every=0)


def test_loss_matches_a_hand_computation_with_the_ratio_clipped():
    # log-ratios: winner 0.05 and 0.5 (clipped to log 1.1), loser -0.02 and 0.0; beta 2
    loss, info = d3po_loss(T([0.05, 0.5]), T([-0.02, 0.0]), T([0.0, 0.0]), T([0.0, 0.0]), beta=2.0, clip_range=0.1)
    margins = [0.05 + 0.02, math.log(1.1) - 0.0]
    assert float(loss) == pytest.approx(sum(math.log1p(math.exp(-2 * m)) for m in margins) / 2, rel=1e-6)
    assert float(info["implicit_acc"]) == 1.0 and float(info["clipped"]) == 0.25


def test_at_the_start_the_loss_is_log2_and_its_gradient_is_minus_beta_over_2_times_the_log_prob_gap():
    theta = torch.tensor([0.3, -0.7], requires_grad=True)
    lp_w, lp_l = -(theta**2).sum(0, keepdim=True), -((theta - 1) ** 2).sum(0, keepdim=True)  # (1,) each
    loss, _ = d3po_loss(lp_w, lp_l, lp_w.detach(), lp_l.detach(), beta=0.1, clip_range=0.1)
    assert float(loss.detach()) == pytest.approx(math.log(2))
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    (gap,) = torch.autograd.grad((lp_w - lp_l).sum(), theta)
    torch.testing.assert_close(grad, -0.1 / 2 * gap)


def test_a_clipped_ratio_passes_no_gradient():
    theta = torch.tensor(0.5, requires_grad=True)
    loss, _ = d3po_loss((theta * 2).reshape(1), T([0.0]), T([0.0]), T([0.0]), beta=1.0, clip_range=0.1)  # ratio e^1
    loss.backward()
    assert float(theta.grad) == 0.0


@pytest.fixture(scope="module")
def d3po_round(tmp_path_factory):
    """A tiny d3po round run up to its training phase: images with trajectories, labelled pairs."""
    loop = Loop(tmp_path_factory.mktemp("data") / "runs", tiny("synthetic:large_warm", "method=d3po", *DIRECT))
    while loop.current() is None or loop.current().phase != "train":
        loop.step()
    return loop


def test_a_stored_trajectory_reproduces_its_image_and_its_log_probs(d3po_round):
    loop = d3po_round
    cfg = loop.stored_config(loop.current())
    sampler, pipe = cfg.ddpo_config(), load_pipeline()
    image = loop.store.images(1)[0]
    path = loop.data_root / image.path
    traj = load_trajectory(trajectory_path(path))
    assert traj.latents.shape[0] == sampler.num_steps + 1 and (traj.eta, traj.guidance_scale) == (sampler.eta, sampler.guidance_scale)
    adapter = PipelineAdapter(pipe)
    with torch.no_grad():
        pixels = adapter.decode(torch.from_numpy(traj.latents[-1:]))[0]
        np.testing.assert_array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))  # the image exactly
        scheduler = adapter.scheduler(sampler.num_steps)
        cond = adapter.encode([image.prompt], "cpu")
        x = torch.from_numpy(traj.latents)  # (T+1, C, h, w)
        replayed = [float(adapter.step(scheduler, adapter.predict(pipe.unet, x[j:j + 1], t, cond, traj.guidance_scale),
                                       t, x[j:j + 1], traj.eta, prev_sample=x[j + 1:j + 2]).log_prob)
                    for j, t in enumerate(scheduler.timesteps)]
    np.testing.assert_allclose(replayed, traj.log_probs, rtol=0, atol=1e-5)


def test_the_trainer_starts_at_log2_exports_a_loadable_lora_and_resumes_exactly(d3po_round, tmp_path):
    loop = d3po_round
    pairs = require_trajectories(loop.direct_pairs(1, loop.stored_config(loop.current())))
    first = D3POTrainer(load_pipeline(), TINY, tmp_path / "a")
    history = first.train(pairs, steps=2, progress=False)
    assert history[0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-6)  # the sampling policy is the reference
    folder = first.save_checkpoint()
    expected = first.train(pairs, steps=2, progress=False)
    resumed = D3POTrainer(load_pipeline(), TINY, tmp_path / "b")
    resumed.load_checkpoint(latest_checkpoint(tmp_path / "a"))
    assert [h["dpo/loss"] for h in resumed.train(pairs, steps=2, progress=False)] == [h["dpo/loss"] for h in expected]

    pipe = load_pipeline()
    pipe.load_lora_weights(folder, weight_name=LORA_FILE)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t, embeds = torch.tensor([500]), pipe.encode_prompt(["a red circle"], "cpu", 1, False)[0]
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    trained = D3POTrainer(load_pipeline(), TINY, tmp_path / "c")
    trained.load_checkpoint(folder)
    assert state["step"] == 2
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, t, encoder_hidden_states=embeds).sample,
                                   trained.unet(x, t, encoder_hidden_states=embeds).sample, rtol=1e-4, atol=1e-5)


def test_pairs_without_trajectories_are_refused_with_one_line(d3po_round, tmp_path, capsys):
    loop = d3po_round
    pairs = loop.direct_pairs(1, loop.stored_config(loop.current()))
    imported = PreferencePair(pairs[0].prompt, pairs[0].winner.read_bytes(), pairs[0].loser.read_bytes())
    with pytest.raises(PairsError, match=f"1 of {len(pairs) + 1} pairs have none"):
        require_trajectories(pairs + [imported])
    rows = tmp_path / "imported.jsonl"
    rows.write_text(json.dumps({"caption": "a red circle", "image_0": str(pairs[0].winner), "image_1": "x.png",
                                "label_0": 1, "label_1": 0}) + "\n")
    (tmp_path / "x.png").write_bytes(pairs[0].loser.read_bytes())
    assert main(["--method", "d3po", "--pairs", str(rows), "--run-dir", str(tmp_path / "run")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and "1 of 1 pairs have none" in errors[0], errors
    assert not (tmp_path / "run").exists()
