"""The shipped toy LCM: a diffusers LCM folder that shares the toy SD's parts, and the distillation's pieces."""
import os

import numpy as np
import pytest
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler

from rlhf.paths import TOY_LCM, TOY_PIPELINE
from rlhf.toy.train_lcm import (SHARED, Distiller, LCMTrainConfig, boundary_scalings, guidance_embedding,
                                load_teacher, student_from_teacher)


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


def test_shipped_lcm_loads_and_draws_in_4_steps():
    pipe = LatentConsistencyModelPipeline.from_pretrained(TOY_LCM, local_files_only=True)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.time_cond_proj_dim
    assert pipe.unet.dtype == torch.float32  # stored in fp16, loaded in float32 as the other parts are
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # as its teacher predicts
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a large red circle on a white background", "two blue squares on a gray background"],
               num_inference_steps=4, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()
    red = out.images[0].reshape(-1, 3)
    assert (red[:, 0] - red[:, 1:].mean(1) > 0.3).any()  # some pixels of the first image are red


def test_shared_parts_are_links_to_the_toy_sd_not_copies():
    for name in SHARED:
        link = TOY_LCM / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative, so it survives a clone
        assert link.resolve() == (TOY_PIPELINE / name).resolve()
        files = sorted(p.name for p in (TOY_PIPELINE / name).iterdir())
        assert files and all(os.path.samefile(link / f, TOY_PIPELINE / name / f) for f in files)  # one copy of the bytes


def test_boundary_conditions_match_lcm_scheduler():
    t = torch.tensor([0, 19, 259, 999])
    c_skip, c_out = boundary_scalings(t)
    assert c_skip[0].item() == 1 and c_out[0].item() == 0  # f(x, 0) = x
    assert (c_skip[1:] < 1e-4).all() and (c_out[1:] > 0.9999).all()
    scheduler = LCMScheduler()
    for i, step in enumerate(t.tolist()):
        ref_skip, ref_out = scheduler.get_scalings_for_boundary_condition_discrete(step)
        assert c_skip[i].item() == pytest.approx(ref_skip) and c_out[i].item() == pytest.approx(ref_out)


def test_guidance_embedding_is_the_pipelines():
    w = torch.tensor([1.0, 4.0, 7.5])
    ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=64)
    assert torch.allclose(guidance_embedding(w, 64), ref, atol=1e-6)


def test_student_starts_as_the_teacher(teacher):
    unet = teacher["unet"]
    student = student_from_teacher(unet, 16).eval()
    x, t, states = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 5, 64)
    with torch.no_grad():
        ref = unet(x, t, states).sample
        got = student(x, t, states, timestep_cond=guidance_embedding(torch.tensor([2.0, 8.0]), 16)).sample
    assert torch.allclose(ref, got, atol=1e-6)


def test_distillation_loss_is_finite_and_falls_on_a_fixed_batch(teacher):
    distiller = Distiller(teacher["unet"], LCMTrainConfig(guidance_dim=16), teacher["prediction_type"])
    opt = torch.optim.AdamW(distiller.student.parameters(), lr=3e-4)
    torch.manual_seed(0)
    z0, cond, uncond = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    losses = []
    for _ in range(6):
        loss = distiller.loss(z0, cond, uncond, torch.Generator().manual_seed(0))  # same t, noise and w each step
        opt.zero_grad()
        loss.backward()
        opt.step()
        distiller.update_target()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.grad is None for p in distiller.teacher.parameters())
