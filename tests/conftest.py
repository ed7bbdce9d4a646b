import os

# Every test runs offline, as CI and a newcomer's laptop do.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import json

import pytest


@pytest.fixture(scope="session")
def preference_clip(tmp_path_factory):
    """A checkpoint laid out as HPSv2 ships one ({"state_dict": {"module.<key>": ...}}), holding the toy CLIP's
    weights, and its architecture registered with open_clip by name, as ViT-H-14 is: (weights, arch)."""
    import open_clip
    import torch
    from safetensors.torch import load_file

    from rlhf.paths import TOY_CLIP

    folder = tmp_path_factory.mktemp("preference_clip")
    config = json.loads((TOY_CLIP / "open_clip_config.json").read_text())
    (folder / "toy-preference-clip.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(folder / "toy-preference-clip.json")
    state = {f"module.{k}": v.float() for k, v in load_file(TOY_CLIP / "open_clip_model.safetensors").items()}
    torch.save({"epoch": 1, "state_dict": state}, folder / "checkpoint.pt")
    return folder / "checkpoint.pt", "toy-preference-clip"
