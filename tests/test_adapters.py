"""Every pipeline family through one adapter: the sampler draws what the family's diffusers pipeline draws, the
step log-probs have their closed forms, and DDPO trains, resumes exactly and exports a LoRA the pipeline loads.

SD and LCM run on the shipped toy models. No SDXL weights exist here, so SDXL runs on a tiny SDXL-architecture
pipeline built from a small config with random weights, the way diffusers' own tests build one: it tests
mechanics only and is a model of nothing.
"""
import math

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DiffusionPipeline, EulerDiscreteScheduler, LCMScheduler,
                       LatentConsistencyModelPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from rlhf.adapters import PipelineAdapter, family
from rlhf.ddpo.config import PRESETS
from rlhf.ddpo.logprob import lcm_step
from rlhf.ddpo.rewards import JpegSize
from rlhf.ddpo.sampling import sample_trajectories
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.lora import LORA_FILE, latest_checkpoint
from rlhf.models import ModelLoadError, load_pipeline, resolve_pipeline
from rlhf.paths import TOY_LCM, TOY_PIPELINE

PROMPTS = ["a large red circle on a white background", "two blue squares on a gray background"]
CLASSES = {"sd": StableDiffusionPipeline, "lcm": LatentConsistencyModelPipeline, "sdxl": StableDiffusionXLPipeline}
STEPS = {"sd": 5, "lcm": 4, "sdxl": 3}
GUIDANCE = 5.0


def tiny_sdxl(folder):
    """SDXL's architecture (two text encoders, pooled embeddings, text_time addition embedding) at toy width."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 16, cross_attention_dim=32,
        norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    tokenizer = CLIPTokenizer.from_pretrained(TOY_PIPELINE / "tokenizer")
    text = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, projection_dim=16,
                vocab_size=tokenizer.vocab_size, max_position_embeddings=tokenizer.model_max_length)
    pipe = StableDiffusionXLPipeline(
        vae=vae, unet=unet, tokenizer=tokenizer, tokenizer_2=tokenizer, text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), add_watermarker=False,
        scheduler=EulerDiscreteScheduler.from_config(dict(  # SDXL base's published scheduler config
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
            set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False, sample_max_value=1.0)))
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return {"sd": TOY_PIPELINE, "lcm": TOY_LCM, "sdxl": tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))}


def reference_images(name, source, generator):
    """The family's own diffusers pipeline, loaded by its class; DDIM at eta 1 where the family samples by DDIM."""
    pipe = CLASSES[name].from_pretrained(source, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"eta": 1.0} if name != "lcm" else {}
    if name != "lcm":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    out = pipe(PROMPTS, num_inference_steps=STEPS[name], guidance_scale=GUIDANCE, generator=generator, output_type="np",
               **kwargs)
    return (out.images * 255).round()


@pytest.mark.parametrize("name", ["sd", "lcm", "sdxl"])
def test_the_sampler_draws_what_the_familys_pipeline_draws(sources, name):
    pipe = load_pipeline(sources[name])
    assert isinstance(pipe, CLASSES[name]) and family(pipe) == name
    traj = sample_trajectories(pipe, pipe.unet, PROMPTS, num_steps=STEPS[name], eta=1.0, guidance_scale=GUIDANCE,
                               generator=torch.Generator().manual_seed(3))
    actions = STEPS[name] - (name == "lcm")  # the consistency sampler's last step is deterministic
    assert traj.latents.shape[1] == STEPS[name] + 1 and traj.log_probs.shape == (2, actions)
    assert torch.isfinite(traj.log_probs).all()
    expected = reference_images(name, sources[name], torch.Generator().manual_seed(3))
    assert np.abs(traj.images.astype(float) - expected).max() <= 1  # the same images, to uint8 rounding


def test_an_unsupported_pipeline_class_is_refused_in_one_line():
    class Other(DiffusionPipeline):
        pass

    with pytest.raises(ModelLoadError) as e:
        PipelineAdapter(Other())
    assert "\n" not in str(e.value) and "StableDiffusionXLPipeline" in str(e.value) and "Other" in str(e.value)


def test_lcm_step_is_the_schedulers_step_with_its_gaussian_log_density():
    scheduler = LCMScheduler.from_pretrained(TOY_LCM / "scheduler")
    scheduler.set_timesteps(4)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for j, t in enumerate(scheduler.timesteps[:-1]):
        expected = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(j)).prev_sample
        step = lcm_step(scheduler, out, t, x, generator=torch.Generator().manual_seed(j))
        torch.testing.assert_close(step.prev_sample, expected, rtol=0, atol=1e-6)
        a_prev = float(scheduler.alphas_cumprod[scheduler.timesteps[j + 1]])
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(j))
        z2 = ((step.prev_sample - step.mean) / math.sqrt(1 - a_prev)) ** 2
        torch.testing.assert_close(z2, noise**2, rtol=1e-4, atol=1e-5)  # the drawn noise is the standardised action
        closed = -0.5 * noise.pow(2).mean(dim=(1, 2, 3)) - 0.5 * math.log(1 - a_prev) - 0.5 * math.log(2 * math.pi)
        torch.testing.assert_close(step.log_prob, closed, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="consistency prediction"):
        lcm_step(scheduler, out, scheduler.timesteps[-1], x)


def tiny_config(name, **changes):
    base = dict(num_steps=STEPS[name], sample_batch_size=4, samples_per_prompt=2, train_batch_size=4,
                timesteps_per_forward=2, stat_min_count=2, prompts=PROMPTS, save_every=0, learning_rate=1e-2)
    return PRESETS["toy"].replace(**(base | changes))


@pytest.mark.parametrize("name", ["lcm", "sdxl"])
def test_ddpo_trains_resumes_exactly_and_exports_a_lora_the_pipeline_loads(sources, name, tmp_path):
    cfg, reward = tiny_config(name), JpegSize(sign=1)
    straight = DDPOTrainer(load_pipeline(sources[name]), reward, cfg, tmp_path / "a")
    expected = [straight.train_epoch() for _ in range(2)]
    first = DDPOTrainer(load_pipeline(sources[name]), reward, cfg, tmp_path / "b")
    first.train_epoch()
    folder = first.save_checkpoint()
    resumed = DDPOTrainer(load_pipeline(sources[name]), reward, cfg, tmp_path / "b")
    resumed.load_checkpoint(latest_checkpoint(tmp_path / "b"))
    got = resumed.train_epoch()
    for key in ("reward/mean", "loss/policy", "ppo/approx_kl"):
        assert got[key] == pytest.approx(expected[1][key], rel=1e-5, abs=1e-9), key

    pipe = CLASSES[name].from_pretrained(sources[name], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=STEPS[name], guidance_scale=GUIDANCE, output_type="np")
    before = pipe(PROMPTS, generator=torch.Generator().manual_seed(1), **kwargs).images
    pipe.load_lora_weights(folder, weight_name=LORA_FILE)
    after = pipe(PROMPTS, generator=torch.Generator().manual_seed(1), **kwargs).images
    assert np.abs(after - before).max() > 1e-4  # the trained LoRA is in the pipeline


def test_a_pipeline_of_an_unsupported_class_is_refused_before_a_round_starts(tmp_path, capsys):
    from rlhf.round.__main__ import main

    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(ModelLoadError, match="is a KandinskyPipeline, not a supported pipeline; supported: "):
        resolve_pipeline(folder)
    assert main(["run", "--rounds", "1", "--run-dir", str(tmp_path / "runs"), "--set", f"pipeline={folder}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "LatentConsistencyModelPipeline" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_the_sdxl_and_lcm_presets_name_their_models_by_hub_id_at_reference_scale():
    from rlhf.round.config import load_config

    sdxl, lcm = load_config("sdxl"), load_config("lcm")
    assert sdxl.pipeline == "stabilityai/stable-diffusion-xl-base-1.0" and sdxl.mixed_precision == "fp16"
    assert lcm.pipeline == "SimianLuo/LCM_Dreamshaper_v7" and lcm.mixed_precision == "fp16"
    assert (lcm.ddpo_config().num_steps, lcm.ddpo_config().guidance_scale) == (4, 8.5)
    assert sdxl.ddpo_config().sample_batch_size * sdxl.ddpo_config().num_batches_per_epoch == 32  # as sd15's epoch


@pytest.mark.slow
def test_ddpo_on_the_toy_lcm_at_4_steps_raises_the_striped_taste_on_held_out_seeds(tmp_path):
    """The rounds' DDPO setting at 4 consistency steps against taste:striped: 10 epochs of 64 trajectories, judged
    on the rounds' 256 held-out images of the training prompts. Seeds 1 and 2 gained +0.358 +- 0.014 and
    +0.346 +- 0.012 (base 0.189); the margin asked is 0.15 at seed 1."""
    from rlhf.ddpo.rewards import TasteReward
    from rlhf.round.config import RoundConfig
    from rlhf.round.evaluate import EvalSet, draw
    from rlhf.toy.tastes import TASTES

    cfg = RoundConfig().ddpo_config().replace(seed=1, num_steps=4)
    eval_prompts, eval_seeds = EvalSet("train_prompts", cfg.prompts, 16).jobs()

    def striped(pipe, unet) -> float:
        images = draw(pipe, unet, eval_prompts, eval_seeds, num_steps=cfg.num_steps, eta=cfg.eta, guidance_scale=cfg.guidance_scale)
        return float(TASTES["striped"].score(list(images), eval_prompts).mean())

    trainer = DDPOTrainer(load_pipeline(TOY_LCM), TasteReward("striped"), cfg, tmp_path)
    before = striped(trainer.pipe, trainer.unet)
    trainer.train(10, progress=False)
    assert striped(trainer.pipe, trainer.unet) > before + 0.15


@pytest.mark.parametrize("method", ["ddpo", "d3po"])
def test_a_round_runs_on_the_toy_lcm(tmp_path, method):
    from rlhf.round.loop import Loop
    from test_round import assert_round_complete, tiny

    run_dir = tmp_path / "runs"
    Loop(run_dir, tiny("synthetic:striped", f"pipeline={TOY_LCM}", f"method={method}")).run(1)
    assert_round_complete(run_dir)
    assert latest_checkpoint(run_dir / "round-001" / method) is not None
