"""Models by hub id, offline: a Hugging Face cache in the standard layout (``models--org--name/blobs``,
``snapshots/<commit>/`` links, ``refs/main``) holds the toy models under made-up ids, and every loader finds them
there exactly as it would find SD 1.5 in a user's cache. Each run is a subprocess, since huggingface_hub reads
HF_HOME and HF_HUB_OFFLINE when it is imported."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.ddpo.rewards import AestheticHead
from rlhf.paths import ROOT, TOY_CLIP, TOY_LCM, TOY_PIPELINE
from test_round import TINY, assert_round_complete

COMMIT = "5f1ee3b2c0a1d4e6f7a8b9c0d1e2f3a4b5c6d7e8"


def cache_repo(hub: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Lay ``files`` (path in repo -> source file) into ``hub`` as huggingface_hub's cache does."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def tree(folder: Path) -> dict[str, Path]:
    """Every file under ``folder``, through linked folders too (the toy LCM links the toy SD's parts)."""
    files = {Path(d) / name for d, _, names in os.walk(folder, followlinks=True) for name in names}
    return {str(p.relative_to(folder)): p for p in sorted(files) if p.name != "training_summary.json"}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, preference_clip) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    cache_repo(home / "hub", "toyorg/toy-sd", tree(TOY_PIPELINE))
    cache_repo(home / "hub", "toyorg/toy-lcm", tree(TOY_LCM))
    cache_repo(home / "hub", "toyorg/toy-clip", tree(TOY_CLIP))
    torch.save(AestheticHead(64).state_dict(), home / "head.pth")
    cache_repo(home / "hub", "toyorg/toy-aesthetic", {"head.pth": home / "head.pth"})
    cache_repo(home / "hub", "toyorg/toy-hps", {"ckpt/HPS_toy.pt": preference_clip[0]})
    return home


def run(args: list[str], hf_home: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_a_round_runs_on_models_named_by_hub_id_from_the_cache(hf_home, tmp_path):
    run_dir = tmp_path / "runs"
    done = run(["-m", "rlhf.round", "run", "--rounds", "1", "--run-dir", str(run_dir), "--labeller", "synthetic:large_warm",
                "--set", "pipeline=toyorg/toy-sd", "--set", f"clip=toyorg/toy-clip@{COMMIT}",
                "--set", "aesthetic_weights=toyorg/toy-aesthetic/head.pth",
                *[a for item in TINY for a in ("--set", item)]], hf_home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_round_complete(run_dir)
    evaluation = json.loads((run_dir / "round-001" / "eval.json").read_text())
    assert "aesthetic" in evaluation["policy"]["eval_prompts"]


def test_every_loader_finds_its_model_by_hub_id(hf_home, preference_clip):
    script = f"""
import numpy as np, open_clip
from rlhf.models import ModelLoadError, load_clip, load_pipeline
from rlhf.ddpo.rewards import Aesthetic, HPSv2
from rlhf.toy.world import dataset

pipe = load_pipeline("toyorg/toy-sd@main")
assert type(pipe).__name__ == "StableDiffusionPipeline", type(pipe)
lcm = load_pipeline("toyorg/toy-lcm")
assert type(lcm).__name__ == "LatentConsistencyModelPipeline" and lcm.unet.config.time_cond_proj_dim, type(lcm)
clip = load_clip("hf-hub:toyorg/toy-clip")
image = dataset(1)[0].image
assert np.isfinite(Aesthetic(clip, "toyorg/toy-aesthetic/head.pth")([image], ["x"], [])[0]).all()
open_clip.add_model_config({str(preference_clip[0].parent / (preference_clip[1] + '.json'))!r})
assert np.isfinite(HPSv2("toyorg/toy-hps/ckpt/HPS_toy.pt", {preference_clip[1]!r})([image], ["a red circle"], [])[0]).all()
for source, load in [("toyorg/missing", load_pipeline), ("toyorg/toy-sd@v9", load_pipeline), ("toyorg/missing", load_clip)]:
    try:
        load(source)
    except ModelLoadError as e:
        print(e)
"""
    done = run(["-c", script], hf_home)
    assert done.returncode == 0, done.stderr[-3000:]
    missing, revision, clip = done.stdout.strip().splitlines()
    assert missing.startswith("pipeline 'toyorg/missing' is not in the Hugging Face cache") and "HF_HUB_OFFLINE=1" in missing
    assert "'toyorg/toy-sd@v9' is not in the Hugging Face cache" in revision
    assert clip.startswith("CLIP model 'toyorg/missing' is not in the Hugging Face cache")


def test_the_sd15_preset_without_the_model_in_the_cache_says_how_to_get_it(tmp_path):
    done = run(["-m", "rlhf.round", "--preset", "sd15", "--run-dir", str(tmp_path / "runs")], tmp_path / "empty_hf_home")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: pipeline 'stable-diffusion-v1-5/stable-diffusion-v1-5' is not in the Hugging Face cache")
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in done.stderr
    assert not (tmp_path / "runs").exists()
