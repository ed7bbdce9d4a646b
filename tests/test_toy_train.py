"""The retraining commands at miniature sizes: they produce models that load the way the shipped ones do."""
import numpy as np

from rlhf.models import load_clip, load_pipeline
from rlhf.toy.train_clip import ClipTrainConfig, train_clip
from rlhf.toy.train_pipeline import PipelineTrainConfig, train_pipeline


def test_pipeline_training_saves_a_loadable_pipeline(tmp_path):
    cfg = PipelineTrainConfig(images=64, vae_steps=2, vae_batch=8, unet_steps=2, unet_batch=8, warmup_steps=1)
    summary = train_pipeline(tmp_path / "sd", cfg)
    assert set(summary) == {"vae_mse", "vae_scaling_factor", "unet_loss"} and summary["vae_scaling_factor"] > 0
    pipe = load_pipeline(tmp_path / "sd")
    image = pipe(["a small red circle on a white background"], num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_clip_training_saves_an_open_clip_folder(tmp_path):
    cfg = ClipTrainConfig(images=64, steps=2, batch=16, warmup_steps=1, eval_images=20)
    summary = train_clip(tmp_path / "clip", cfg)
    assert 0 <= summary["held_out_retrieval"]["caption_top1"] <= 1
    clip = load_clip(tmp_path / "clip")
    assert clip.embed_texts(["a small red circle on a white background"]).shape == (1, 64)
