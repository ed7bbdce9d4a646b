"""Load the diffusion pipeline, the CLIP model and weight files, by local folder or hub id, as diffusers does.

A source is tried as a local folder (or file) first, then as a Hugging Face hub id ``org/name[@revision]``: from
the cache when offline (``HF_HUB_OFFLINE=1``), else downloaded. A source that is neither gets one line saying
what was tried and why it failed (not a folder; offline and not in the cache; gated or missing on the hub).
Every ``resolve_*`` only finds a model, without loading it, so a round can check all of its models before it
draws anything. The toy world is only the default value of these arguments: ``load_pipeline()`` loads the shipped
tiny Stable Diffusion exactly as ``load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")`` loads SD 1.5.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rlhf.paths import TOY_CLIP, TOY_PIPELINE


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was asked for and how to fix it."""


HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
HUB_FILE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>[\w./-]+?)(?:@(?P<revision>[\w.-]+))?")
PIPELINE_MARKER = "model_index.json"
CLIP_MARKER = "open_clip_config.json"
CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""open_clip's weight file names in a model folder or hub repository, preferred first"""


def hub_file(repo: str, filename: str, revision: str | None, what: str, name_file: bool = False) -> Path:
    """One file of a hub repository: from the cache when offline, else downloaded; one-line errors that name the
    repository (and the file, with ``name_file``)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = (f"{repo}/{filename}" if name_file else repo) + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except LocalEntryNotFoundError:
        where = ("the hub is offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE
                 else "the hub cannot be reached")
        problem = f"{what} {at!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {where}"
        fix = f"run `hf download {repo}` on a connected machine and copy its ~/.cache/huggingface here (or point HF_HOME at it), or pass a local folder"
    except GatedRepoError:
        problem = f"{what} {at!r} is gated on the Hugging Face hub"
        fix = "accept its terms on its hub page, then log in with `hf auth login`"
    except RepositoryNotFoundError:
        problem = f"no {what} {at!r} on the Hugging Face hub (or it is private)"
        fix = "check the id (org/name), log in with `hf auth login` for a private one, or pass a local folder"
    except RevisionNotFoundError:
        problem, fix = f"{repo!r} has no revision {revision!r}", "name a branch, tag or commit that exists"
    except EntryNotFoundError:
        problem = f"{at!r} has no {filename}"
        fix = f"it is not a {what} in the expected format; pass one saved with save_pretrained"
    except HFValidationError as e:
        problem, fix = f"{at!r} is not a valid hub id ({e})", "write it as org/name[@revision]"
    raise ModelLoadError(f"{problem}: {fix}")


def resolve_folder(source: str | Path, marker: str, what: str, hint: str = "") -> tuple[str, str | None]:
    """(folder or repo id, revision) of a model saved with ``save_pretrained``: a local folder holding
    ``marker``, else a hub id whose ``marker`` is in the cache or on the hub."""
    source = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise ModelLoadError(f"{path} has no {marker}: it is not a {what} folder saved with save_pretrained")
        return str(path), None
    match = HUB_ID.fullmatch(source)
    if match is None or source.startswith((".", "~")):
        raise ModelLoadError(f"no {what} folder at {source}, and it is not a hub id (org/name[@revision])"
                             + (f"; {hint}" if hint else ""))
    hub_file(match["repo"], marker, match["revision"], what)
    return match["repo"], match["revision"]


PIPELINE_FAMILIES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
                     "LatentConsistencyModelPipeline": "lcm"}
"""The pipeline classes the engine drives (`rlhf.adapters`), and their family names"""


def resolve_pipeline(source: str | Path) -> tuple[str, str | None]:
    """(folder or repo id, revision) of a pipeline of a supported class, read from its ``model_index.json``."""
    toy = "run `python -m rlhf.toy.train pipeline` to rebuild the toy pipeline" if Path(source) == TOY_PIPELINE else ""
    repo, revision = resolve_folder(source, PIPELINE_MARKER, "pipeline", toy)
    index = Path(repo) / PIPELINE_MARKER if Path(repo).is_dir() else hub_file(repo, PIPELINE_MARKER, revision, "pipeline")
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"cannot read {index}: {e}") from None
    if name not in PIPELINE_FAMILIES:
        raise ModelLoadError(f"{source} is a {name}, not a supported pipeline; supported: {', '.join(PIPELINE_FAMILIES)}")
    return repo, revision


def resolve_file(spec: str | Path, what: str) -> Path:
    """A weights file: a local file, else a hub file ``org/name/path/in/repo[@revision]``."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    match = HUB_FILE.fullmatch(spec)
    if match is None or spec.startswith((".", "~", "/")):
        raise ModelLoadError(f"no {what} file at {spec}, and it is not a hub file (org/name/file[@revision])")
    return hub_file(match["repo"], match["file"], match["revision"], what, name_file=True)


def resolve_clip(name: str | Path = TOY_CLIP, pretrained: str | None = None) -> tuple[str, str | None]:
    """(open_clip model name, pretrained) for ``create_model_and_transforms``: a local folder (``local-dir:``), a
    hub id (its snapshot in the cache, as a local folder), or a built-in architecture whose pretrained tag or
    weights file is found first."""
    import open_clip

    name = str(name).removeprefix("hf-hub:")
    if Path(name).expanduser().is_dir() or HUB_ID.fullmatch(name) and name not in open_clip.list_models():
        folder, revision = resolve_folder(name, CLIP_MARKER, "CLIP model", "or name an open_clip architecture such as ViT-L-14")
        if not Path(folder).is_dir():  # a hub id: fetch its weights beside the config, then load it as a folder
            folder = str(hub_clip_weights(folder, revision).parent)
        return f"local-dir:{Path(folder).expanduser()}", None
    if name not in open_clip.list_models():
        raise ModelLoadError(f"no CLIP folder at {name}, it is not an open_clip architecture (e.g. ViT-L-14, "
                             "ViT-H-14) and not a hub id (org/name)")
    if pretrained is None or Path(pretrained).expanduser().is_file():
        return name, pretrained
    config = open_clip.get_pretrained_cfg(name, pretrained)
    if not config:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelLoadError(f"no pretrained {pretrained!r} for {name}, and no such weights file; its tags: {tags}")
    if config.get("hf_hub"):
        hub_clip_weights(config["hf_hub"].strip("/"), None)
    return name, pretrained


def hub_clip_weights(repo: str, revision: str | None) -> Path:
    """The cached open_clip weights file of a hub repository (safetensors preferred)."""
    for filename in CLIP_WEIGHTS[:-1]:
        try:
            return hub_file(repo, filename, revision, "CLIP model")
        except ModelLoadError:
            pass
    return hub_file(repo, CLIP_WEIGHTS[-1], revision, "CLIP model")


def precision_dtype(mixed_precision: str) -> torch.dtype:
    """The weight dtype of a mixed-precision setting: 'fp16', 'bf16', or float32 for 'no'."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def load_pipeline(source: str | Path = TOY_PIPELINE, *, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu"):
    """Any diffusers text-to-image pipeline, from a folder saved with ``save_pretrained`` or a hub id."""
    from diffusers import DiffusionPipeline

    repo, revision = resolve_pipeline(source)
    try:
        pipe = DiffusionPipeline.from_pretrained(repo, revision=revision, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load pipeline {str(source)!r}: {str(e).splitlines()[0]}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass
class Clip:
    """An open_clip model with its preprocessing and tokenizer: embeds images and texts for rewards."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed_images(self, images: list[np.ndarray | Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings, (N, D)."""
        pil = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
        x = torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings, (N, D)."""
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1)


def load_clip(name: str | Path = TOY_CLIP, pretrained: str | None = None, *, device: str = "cpu") -> Clip:
    """An open_clip model: a folder with ``open_clip_config.json``, a hub id, or a built-in architecture
    (``ViT-L-14``) with a pretrained tag or weights file."""
    import open_clip

    model_name, pretrained = resolve_clip(name, pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"cannot load CLIP {str(name)!r}: {str(e).splitlines()[0]}") from e
    return Clip(model.eval().requires_grad_(False), preprocess, tokenizer, str(name))
