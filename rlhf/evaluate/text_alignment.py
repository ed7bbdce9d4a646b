"""Text alignment: caption each image, embed caption and prompt with a sentence model, take their cosine.

The published DrawBench figures caption with a vision-language model and embed with a SentenceBERT model. Here
the two steps are interfaces, so the same ``TextAlignment`` runs on real models and in the toy world:

- a captioner: any image-to-text model transformers loads with ``AutoModelForImageTextToText`` (BLIP, BLIP-2,
  GIT, ViT-GPT2; by folder or hub id), or, in the toy world, the analyser's reading of the image as a caption;
- a sentence embedder: any sentence-transformers model (e.g. sentence-transformers/all-MiniLM-L6-v2; by folder or
  hub id), or, in the toy world, the toy CLIP's text tower.

Sentence-transformers models are run with transformers alone (``AutoModel`` plus the pooling their
``modules.json`` and ``1_Pooling/config.json`` name), not through the sentence-transformers package: such a model
is a transformers encoder followed by pooling and normalisation, so the package would add a dependency and a
second model loader (with its own cache and download logic) for one pooling function. Loading through
``rlhf.models.resolve_folder`` gives these models the same one-line errors as every other model here. A model
with modules beyond Transformer, Pooling and Normalize (a Dense projection, say) is refused with one line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rlhf.evaluate.metrics import Judged
from rlhf.evaluate.stats import cosine
from rlhf.models import Clip, ModelLoadError, resolve_folder

POOLING_MODES = ("mean", "cls", "max", "lasttoken")
SUPPORTED_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                     "sentence_transformers.models.Normalize"}


class Captioner(Protocol):
    name: str

    def __call__(self, judged: Judged) -> list[str]:
        """One caption per image of ``judged``."""


class SentenceEmbedder(Protocol):
    name: str

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(N, D) embeddings, one per text."""


class TextAlignment:
    """Cosine of the caption's and the prompt's sentence embeddings, per image (each distinct text embedded once)."""

    def __init__(self, captioner: Captioner, embedder: SentenceEmbedder, name: str = "text_alignment",
                 title: str = "text alignment"):
        self.captioner, self.embedder, self.name, self.title = captioner, embedder, name, title
        self.captions: list[str] = []
        """the last image set's captions, for the report"""

    def __call__(self, judged: Judged) -> np.ndarray:
        self.captions = self.captioner(judged)
        unique = list(dict.fromkeys(self.captions))
        position = {c: i for i, c in enumerate(unique)}
        captions = self.embedder(unique)[[position[c] for c in self.captions]]  # (N, D)
        if isinstance(self.embedder, ClipTextEmbedder):  # the prompts' CLIP embeddings, shared with the CLIP score
            prompts = judged.text_embeddings(self.embedder.clip).numpy()  # (N, D)
        else:
            prompts = self.embedder(judged.unique_prompts)[judged.prompt_index]  # (N, D)
        return cosine(captions, prompts)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence-transformers pooling of (B, T, D) token states under a (B, T) attention mask, (B, D); right
    padding assumed for ``lasttoken``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        return hidden[torch.arange(len(hidden)), mask.sum(1) - 1]
    raise ValueError(f"pooling {mode!r}; one of {POOLING_MODES}")


def pooling_mode(config: dict) -> str:
    """The pooling a sentence-transformers ``1_Pooling/config.json`` names (its ``pooling_mode`` or flags)."""
    if isinstance(config.get("pooling_mode"), str):
        mode = config["pooling_mode"].removesuffix("_token").removesuffix("_tokens")
    else:
        on = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
        mode = on[0].removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens") if len(on) == 1 else "/".join(on)
    if mode not in POOLING_MODES:
        raise ModelLoadError(f"sentence model pooling {mode or 'none'!r} is not supported; pick a model that pools by "
                             f"{', '.join(POOLING_MODES)} (e.g. sentence-transformers/all-MiniLM-L6-v2)")
    return mode


def model_file(repo: str, revision: str | None, filename: str) -> Path | None:
    """A small file of a model folder or hub repository, or None where it has none (or the offline cache lacks it)."""
    if Path(repo).is_dir():
        path = Path(repo) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


class SentenceEncoder:
    """A sentence-transformers model (folder or hub id) run with transformers: tokenise, encode, pool, normalise.

    A model without ``modules.json`` is pooled by the mean over its tokens, as sentence-transformers pools a plain
    transformers model."""

    def __init__(self, source: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.name, self.batch_size, self.device = str(source), batch_size, torch.device(device)
        repo, revision = resolve_folder(source, "config.json", "sentence embedding model",
                                        "e.g. sentence-transformers/all-MiniLM-L6-v2")
        modules_file = model_file(repo, revision, "modules.json")
        modules = json.loads(modules_file.read_text()) if modules_file else []
        unsupported = sorted({m["type"] for m in modules} - SUPPORTED_MODULES)
        if unsupported:
            raise ModelLoadError(f"sentence model {self.name!r} has modules {unsupported}, which this loader does not run; "
                                 "pick one made of Transformer, Pooling and Normalize (e.g. sentence-transformers/all-MiniLM-L6-v2)")
        pooling_path = next((m["path"] for m in modules if m["type"].endswith(".Pooling")), None)
        pooling_file = model_file(repo, revision, f"{pooling_path}/config.json") if pooling_path else None
        self.pooling = pooling_mode(json.loads(pooling_file.read_text())) if pooling_file else "mean"
        st_config = model_file(repo, revision, "sentence_bert_config.json")
        self.max_length = json.loads(st_config.read_text()).get("max_seq_length") if st_config else None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
            self.model = AutoModel.from_pretrained(repo, revision=revision).eval().requires_grad_(False).to(self.device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load sentence model {self.name!r}: {str(e).splitlines()[0]}") from e
        self.tokenizer.padding_side = "right"

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
            out.append(F.normalize(pool(hidden, batch["attention_mask"], self.pooling).float(), dim=-1).cpu())
        return torch.cat(out).numpy()


class ImageToText:
    """An image-to-text model transformers loads with ``AutoModelForImageTextToText`` and ``AutoProcessor`` (folder or
    hub id), captioning each image from the image alone with greedy decoding."""

    def __init__(self, source: str | Path, device: str | torch.device = "cpu", batch_size: int = 16,
                 max_new_tokens: int = 30):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name, self.batch_size, self.max_new_tokens = str(source), batch_size, max_new_tokens
        self.device = torch.device(device)
        repo, revision = resolve_folder(source, "config.json", "image-to-text model",
                                        "e.g. Salesforce/blip-image-captioning-base")
        try:
            self.processor = AutoProcessor.from_pretrained(repo, revision=revision)
            self.model = AutoModelForImageTextToText.from_pretrained(repo, revision=revision)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load image-to-text model {self.name!r}: {str(e).splitlines()[0]}") from e
        self.model = self.model.eval().requires_grad_(False).to(self.device)

    @torch.inference_mode()
    def __call__(self, judged: Judged) -> list[str]:
        captions = []
        for i in range(0, len(judged), self.batch_size):
            images = [Image.fromarray(im) for im in judged.images[i:i + self.batch_size]]
            inputs = self.processor(images=images, return_tensors="pt").to(self.device)
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            captions += [c.strip() for c in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return captions


class AnalyserCaptioner:
    """The toy world's captioner: the analyser's reading of the image, written as a toy caption."""

    name = "toy analyser"

    def __call__(self, judged: Judged) -> list[str]:
        return [caption(a) for a in judged.analyses()]


def caption(analysis) -> str:
    """A toy caption of what the analyser found ("a small red circle on the left on a white background"); an image
    with no shape is captioned by its background alone."""
    scene = analysis.scene()
    return scene.caption() if scene is not None else f"a {analysis.background} background"


class ClipTextEmbedder:
    """The toy world's sentence embedder: a CLIP's text tower (unit-norm ``embed_texts``), each text embedded once
    however many image sets ask for it (the prompts recur for every model)."""

    def __init__(self, clip: Clip, batch_size: int = 64):
        self.clip, self.batch_size, self.name = clip, batch_size, f"{clip.name} text tower"
        self._seen: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        for i in range(0, len(new), self.batch_size):
            batch = new[i:i + self.batch_size]
            self._seen |= dict(zip(batch, self.clip.embed_texts(batch).cpu().numpy()))
        return np.stack([self._seen[t] for t in texts])
