"""Train the toy CLIP (image + text towers) contrastively on the toy world, in open_clip's own format.

Saved as ``open_clip_config.json`` + ``open_clip_model.safetensors`` so that
``open_clip.create_model_and_transforms("local-dir:<folder>")`` loads it, the same call that loads
``ViT-L-14``. Weights are stored in fp16 to keep the repository small; open_clip upcasts them on load.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rlhf.toy.train_pipeline import to_pixels, warmup_cosine  # same pixels as the shipped preprocess: [-1, 1]
from rlhf.toy.world import (BACKGROUNDS, IMAGE_SIZE, POSITION_PHRASES, POSITIONS, SHAPE_COLOURS, SHAPES, SIZES, Drawing,
                            Scene, dataset)

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 4, "width": 64, "head_width": 16, "patch_size": 4},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
}
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass
class ClipTrainConfig:
    seed: int = 0
    images: int = 40_000
    steps: int = 1500
    batch: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    eval_images: int = 1000


def all_scenes() -> list[Scene]:
    """Every scene a toy caption can name: the label set of zero-shot caption retrieval."""
    scenes = []
    for shape, colour, bg in itertools.product(SHAPES, SHAPE_COLOURS, BACKGROUNDS):
        if bg == colour:
            continue
        for size, pos in itertools.product(SIZES, [None, *POSITIONS]):
            scenes.append(Scene(shape, colour, bg, size, 1, pos))
        scenes += [Scene(shape, colour, bg, "small", n) for n in (2, 3)]
    return scenes


_ROWS, _COLUMNS = ("top", None, "bottom"), ("left", None, "right")


def where(x: float, y: float) -> str:
    """A 3 x 3 grid phrase for a point; the five toy prompt positions fall in the matching cells."""
    row, col = _ROWS[min(2, int(y * 3 / IMAGE_SIZE))], _COLUMNS[min(2, int(x * 3 / IMAGE_SIZE))]
    return f"at the {row} {col}" if row and col else POSITION_PHRASES[row or col or "centre"]


def describe(drawing: Drawing, rng: np.random.Generator, share: float = 0.5) -> str:
    """The caption CLIP trains on: it names the background's stripes, and a share of lone shapes whose prompt named no
    place say where they landed.

    Web alt-texts describe style and composition that generation prompts leave out; a CLIP trained on the bare
    templates has no reason to embed where a shape is, and a reward head on it could not learn a taste for placement.
    """
    scene = drawing.scene
    if scene.count > 1 or scene.position is not None or rng.random() >= share:
        caption = scene.caption()
    else:
        caption = scene.caption(place=where(*drawing.centres[0]))
    return striped_caption(caption, scene.background) if drawing.stripes else caption


def striped_caption(caption: str, background: str) -> str:
    return caption.replace(f" on a {background} background", f" on a striped {background} background")


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE whose targets spread over every pair with the same caption (no false negatives)."""
    logits = logit_scale.exp() * img @ txt.T  # (B, B)
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def retrieval_accuracy(model, tokenizer, drawings: list[Drawing]) -> dict[str, float]:
    """Top-1 zero-shot caption retrieval over all toy captions, per attribute of the retrieved caption, and how
    often the true caption with "striped" said or not is the closer of the two."""
    scenes = all_scenes()
    txt = F.normalize(model.encode_text(tokenizer([s.caption() for s in scenes])), dim=-1)
    img = F.normalize(model.encode_image(to_pixels([d.image for d in drawings])), dim=-1)
    best = [scenes[i] for i in (img @ txt.T).argmax(1).tolist()]
    truths = [d.scene for d in drawings]
    out = {"caption_top1": float(np.mean([b == t for b, t in zip(best, truths)])), "captions": len(scenes)}
    for attr in ("shape", "colour", "background", "count"):
        out[attr] = float(np.mean([getattr(b, attr) == getattr(t, attr) for b, t in zip(best, truths)]))
    plain = F.normalize(model.encode_text(tokenizer([t.caption() for t in truths])), dim=-1)
    stripy = F.normalize(model.encode_text(tokenizer([striped_caption(t.caption(), t.background) for t in truths])), dim=-1)
    says_striped = ((img * stripy).sum(1) > (img * plain).sum(1)).numpy()
    out["stripes"] = float(np.mean(says_striped == np.array([d.stripes > 0 for d in drawings])))
    return out


def train_clip(out_dir: Path, cfg: ClipTrainConfig = ClipTrainConfig()) -> dict:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    drawings = dataset(cfg.images, seed=cfg.seed + 1)
    pixels = to_pixels([d.image for d in drawings])
    rng = np.random.default_rng(cfg.seed)
    captions = [describe(d, rng) for d in drawings]
    caption_ids = torch.tensor([hash(c) for c in captions])
    tokens = tokenizer(captions)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.steps))
    ema = None
    for _ in (bar := tqdm(range(cfg.steps), desc="clip")):
        idx = torch.randint(len(pixels), (cfg.batch,), generator=gen)
        img = F.normalize(model.encode_image(pixels[idx]), dim=-1)
        txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        same = (caption_ids[idx, None] == caption_ids[None, idx]).float()
        loss = contrastive_loss(img, txt, model.logit_scale, same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    held_out = dataset(cfg.eval_images, seed=10_000 + cfg.seed)
    quality = retrieval_accuracy(model, tokenizer, held_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, indent=2)
    )
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, out_dir / "open_clip_model.safetensors")
    return {"loss": ema, "held_out_retrieval": quality}
