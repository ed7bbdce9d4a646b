"""The retraining commands at miniature sizes: they produce models that load the way the shipped ones do."""
import numpy as np
import pytest

from rlhf.models import load_clip, load_pipeline
from rlhf.toy.train_clip import ClipTrainConfig, describe, train_clip, where
from rlhf.toy.world import POSITION_PHRASES, POSITIONS, Scene, draw
from rlhf.toy.train_pipeline import PipelineTrainConfig, train_pipeline


def test_pipeline_training_saves_a_loadable_pipeline(tmp_path):
    cfg = PipelineTrainConfig(images=64, vae_steps=2, vae_batch=8, unet_steps=2, unet_batch=8, warmup_steps=1)
    summary = train_pipeline(tmp_path / "sd", cfg)
    assert set(summary) == {"vae_mse", "vae_scaling_factor", "unet_loss"} and summary["vae_scaling_factor"] > 0
    pipe = load_pipeline(tmp_path / "sd")
    assert pipe.scheduler.config.prediction_type == cfg.prediction_type == "v_prediction"  # sampled as it was trained
    image = pipe(["a small red circle on a white background"], num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_unknown_prediction_type_is_refused_before_training():
    with pytest.raises(ValueError, match="prediction_type='sample'; use 'epsilon' or 'v_prediction'"):
        PipelineTrainConfig(prediction_type="sample")


def test_clip_training_saves_an_open_clip_folder(tmp_path):
    cfg = ClipTrainConfig(images=64, steps=2, batch=16, warmup_steps=1, eval_images=20)
    summary = train_clip(tmp_path / "clip", cfg)
    assert 0 <= summary["held_out_retrieval"]["caption_top1"] <= 1
    clip = load_clip(tmp_path / "clip")
    assert clip.embed_texts(["a small red circle on a white background"]).shape == (1, 64)


def test_clip_captions_say_where_an_unplaced_shape_landed():
    assert all(where(*POSITIONS[p]) == phrase for p, phrase in POSITION_PHRASES.items())
    assert (where(2, 2), where(30, 16), where(16, 30)) == ("at the top left", "on the right", "at the bottom")
    rng = np.random.default_rng(0)
    unplaced = draw(Scene("circle", "red", "white", "small"), seed=3)
    caption = describe(unplaced, rng, share=1.0)
    assert caption.startswith("a small red circle ") and where(*unplaced.centres[0]) in caption
    placed, several = draw(Scene("circle", "red", "white", "small", 1, "left")), draw(Scene("circle", "red", "white", "small", 2))
    assert describe(placed, rng, share=1.0) == placed.scene.caption() and describe(several, rng, share=1.0) == several.scene.caption()
    assert describe(unplaced, rng, share=0.0) == unplaced.scene.caption()
    striped = draw(Scene("circle", "red", "white", "small", 2), stripes=0.5)
    assert describe(striped, rng) == "two red circles on a striped white background"
