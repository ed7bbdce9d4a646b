"""Diffusion-DPO: the loss against hand computations and its gradient at the start; the trainer on the shipped toy
pipeline (the first step's loss is log 2, the LoRA loads with load_lora_weights, resume is exact); the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rlhf.dpo.__main__ import main
from rlhf.dpo.config import PRESETS
from rlhf.dpo.data import PreferencePair
from rlhf.dpo.loss import diffusion_dpo_loss
from rlhf.dpo.trainer import DiffusionDPOTrainer
from rlhf.lora import LORA_FILE, latest_checkpoint
from rlhf.models import load_pipeline
from rlhf.toy.world import dataset

T = torch.tensor
TINY = PRESETS["toy"].replace(train_batch_size=2, gradient_accumulation_steps=1, save_every=0)


def test_loss_matches_a_hand_computation():
    loss, info = diffusion_dpo_loss(T([0.5, 0.2]), T([0.3, 0.4]), T([0.4, 0.3]), T([0.35, 0.3]), beta=10.0)
    # margins (ref_w - err_w) - (ref_l - err_l) = -0.15, 0.2; loss = mean(log(1 + exp(-beta/2 * margin)))
    assert float(loss) == pytest.approx((math.log1p(math.exp(0.75)) + math.log1p(math.exp(-1.0))) / 2, rel=1e-6)
    assert float(info["implicit_acc"]) == 0.5


def test_a_policy_that_denoises_the_winner_better_has_a_lower_loss():
    ref = T([0.4]), T([0.4])
    worse, _ = diffusion_dpo_loss(T([0.45]), T([0.4]), *ref, beta=50.0)
    better, _ = diffusion_dpo_loss(T([0.35]), T([0.4]), *ref, beta=50.0)
    assert float(better) < math.log(2) < float(worse)


def test_at_the_start_the_loss_is_log2_and_its_gradient_is_beta_over_4_times_the_error_gap():
    theta = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    a, b = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.2, -1.0, 0.7]])
    err_w, err_l = (a @ theta) ** 2, (b @ theta - 1) ** 2  # (1,) each
    beta = 5000.0
    loss, _ = diffusion_dpo_loss(err_w, err_l, err_w.detach(), err_l.detach(), beta)
    assert float(loss.detach()) == pytest.approx(math.log(2))
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    (gap,) = torch.autograd.grad((err_w - err_l).sum(), theta)
    torch.testing.assert_close(grad, beta / 4 * gap)


def test_errors_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="one value per pair"):
        diffusion_dpo_loss(T([0.1, 0.2]), T([[0.1], [0.2]]), T([0.1, 0.2]), T([0.1, 0.2]), beta=1.0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list[PreferencePair]:
    """Pairs of toy-world drawings, each preferred to its own upside-down copy, with its caption."""
    folder = tmp_path_factory.mktemp("pairs")
    out = []
    for k, d in enumerate(dataset(8, seed=3)):
        upright, flipped = folder / f"{k}-w.png", folder / f"{k}-l.png"
        Image.fromarray(d.image).save(upright)
        Image.fromarray(np.flipud(d.image).copy()).save(flipped)
        out.append(PreferencePair(d.scene.caption(), upright, flipped))
    return out


def test_the_first_step_starts_at_log2_and_the_lora_loads_in_diffusers(pairs, tmp_path):
    trainer = DiffusionDPOTrainer(load_pipeline(), TINY, tmp_path)
    history = trainer.train(pairs, steps=3, progress=False)
    assert history[0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-6)  # a fresh LoRA is the reference
    assert all(np.isfinite(h["dpo/loss"]) for h in history) and history[-1]["dpo/err/policy"] > 0
    folder = trainer.save_checkpoint()
    pipe = load_pipeline()
    pipe.load_lora_weights(folder, weight_name=LORA_FILE)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t, embeds = torch.tensor([500]), pipe.encode_prompt(["a red circle"], "cpu", 1, False)[0]
    with torch.no_grad():
        loaded = pipe.unet(x, t, encoder_hidden_states=embeds).sample
        trained = trainer.unet(x, t, encoder_hidden_states=embeds).sample
        base = load_pipeline().unet(x, t, encoder_hidden_states=embeds).sample
    torch.testing.assert_close(loaded, trained, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loaded, base)  # three steps moved the policy


def test_resume_from_a_checkpoint_is_exact(pairs, tmp_path):
    straight = DiffusionDPOTrainer(load_pipeline(), TINY, tmp_path / "a")
    straight.train(pairs, steps=2, progress=False)
    straight.save_checkpoint()
    expected = straight.train(pairs, steps=2, progress=False)
    resumed = DiffusionDPOTrainer(load_pipeline(), TINY, tmp_path / "b")
    resumed.load_checkpoint(latest_checkpoint(tmp_path / "a"))
    got = resumed.train(pairs, steps=2, progress=False)
    assert [h["dpo/loss"] for h in got] == [h["dpo/loss"] for h in expected]
    for (name, p), q in zip(straight.unet.named_parameters(), resumed.unet.parameters()):
        assert torch.equal(p, q), name

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "a" / "tensorboard").rglob("events.out.tfevents.*")).parent)).Reload()
    for tag in ("dpo/loss", "dpo/implicit_acc", "train/grad_norm"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag


def _write(rows, path):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_cli_trains_on_exported_rows_and_leaves_out_ties(pairs, tmp_path, capsys):
    rows = [{"caption": p.prompt, "image_0": p.loser.name, "image_1": p.winner.name, "label_0": 0, "label_1": 1}
            for p in pairs] + [{"caption": "x", "image_0": "a.png", "image_1": "b.png", "label_0": 0.5, "label_1": 0.5}]
    source = _write(rows, tmp_path / "labels.jsonl")
    args = ["--pairs", str(source), "--images", str(pairs[0].winner.parent), "--steps", "2", "--run-dir",
            str(tmp_path / "run"), "--set", "train_batch_size=2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 8 and summary["left_out"] == {"tie": 1} and summary["steps"] == 2
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / LORA_FILE).is_file()


@pytest.mark.parametrize("rows, extra, message", [
    ([{"caption": "x", "image_0": "nope.png", "image_1": "b.png", "label_0": 1, "label_1": 0}], [], "row 1: no image at"),
    ([{"caption": "x", "image_0": "a.png", "image_1": "b.png", "label_0": 0, "label_1": 0}], [], "none of its 1 rows has a winner"),
    ([{"caption": "x", "image_0": "a.png", "label_0": 1}], [], "row 1: no label_1 column"),
    ([], ["--set", "beta=-1"], "beta=-1.0 must be > 0"),
    ([], ["--set", "bta=1"], "unknown setting 'bta'; did you mean beta?"),
    ([], ["--model", "/no/such/model"], "no pipeline folder at /no/such/model"),
])
def test_bad_input_gets_one_line_and_no_run_folder(pairs, tmp_path, capsys, rows, extra, message):
    good = [{"caption": pairs[0].prompt, "image_0": str(pairs[0].winner), "image_1": str(pairs[0].loser),
             "label_0": 1, "label_1": 0}]
    source = _write(rows or good, tmp_path / "labels.jsonl")
    assert main(["--pairs", str(source), "--run-dir", str(tmp_path / "run"), *extra]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_prompt_conditioning_is_encoded_once_and_the_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("rlhf.dpo.trainer.CACHE_SIZE", 2)
    trainer = DiffusionDPOTrainer(load_pipeline(), TINY, tmp_path)
    prompts = ["a red circle", "a blue square", "a red circle"]
    cached = trainer.encode(prompts)
    torch.testing.assert_close(cached.embeds, trainer.adapter.encode(prompts, "cpu", guided=False).embeds)
    assert list(trainer.embed_cache) == ["a blue square", "a red circle"]
    trainer.encode(["a green triangle"])
    assert list(trainer.embed_cache) == ["a red circle", "a green triangle"]  # the least recent went
