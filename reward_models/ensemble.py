"""An ensemble of reward heads, and the reward model that DDPO optimises.

K heads fitted on bootstrap resamples with different seeds agree where the labels pin the taste down and
disagree away from them. DDPO is rewarded ``mean - lam * std``, so drifting to images the labels never covered
costs the policy reward instead of earning it: the over-optimisation guard of Coste et al. (2024).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reward_models.embeddings import EmbeddingCache
from reward_models.evaluate import cross_validate
from reward_models.features import FeatureSpec, backbone_name
from reward_models.heads import Head, HeadConfig, fit_head, make_head
from rlhf.models import Clip

MODEL_FILE, WEIGHTS_FILE = "reward_model.json", "heads.safetensors"


class BackboneMismatch(ValueError):
    """A saved reward model was fitted on other CLIP weights than the ones given to load it."""


@dataclass(frozen=True)
class RewardModelConfig:
    """How a reward model is fitted, evaluated and turned into a DDPO reward."""

    head: HeadConfig = field(default_factory=HeadConfig)
    """Each member's architecture and optimiser."""
    k: int = 5
    """Heads in the ensemble (Coste et al. 2024 used 4-5)."""
    bootstrap: bool = True
    """Fit each head on a bootstrap resample of the pairs; seeds differ either way."""
    lam: float = 1.0
    """DDPO reward = mean - lam * std, both in logits; 0 turns the over-optimisation guard off."""
    n_splits: int = 5
    """Folds of the held-out evaluation, grouped by prompt."""
    seed: int = 0
    """Head i uses seed + i for its resample and its initialisation."""


@dataclass
class HeadEnsemble:
    """K fitted heads sharing one score zero (each subtracts its mean training score)."""

    heads: list[Head]

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over heads of each row's score."""
        x = torch.as_tensor(features, dtype=torch.float32)
        scores = torch.stack([h(x) for h in self.heads]).numpy()  # (K, N)
        return scores.mean(0), scores.std(0)

    def mean(self, features: np.ndarray) -> np.ndarray:
        return self.predict(features)[0]


def fit_ensemble(features_a: np.ndarray, features_b: np.ndarray, targets: np.ndarray,
                 config: RewardModelConfig = RewardModelConfig()) -> HeadEnsemble:
    """K heads; head i sees a bootstrap resample of the pairs (as multinomial weights) and seed ``seed + i``."""
    n, heads = len(targets), []
    for i in range(config.k):
        counts = np.random.default_rng(config.seed + i).multinomial(n, np.full(n, 1 / n)) if config.bootstrap else None
        heads.append(fit_head(features_a, features_b, targets, config.head, sample_weight=counts, seed=config.seed + i))
    return HeadEnsemble(heads)


class RewardModel:
    """``score(images, prompts) -> (mean, std)`` and the DDPO reward ``mean - lam * std``."""

    name = "reward_model"

    def __init__(self, clip: Clip, ensemble: HeadEnsemble, spec: FeatureSpec, card: dict, lam: float = 1.0):
        self.clip, self.ensemble, self.spec, self.card, self.lam = clip, ensemble, spec, card, lam

    def features(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        image_emb = self.clip.embed_images(list(images)).cpu().numpy()
        return self.spec(image_emb, self.clip.embed_texts(list(prompts)).cpu().numpy())

    def score(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and std of each image's score, in logits (a difference of 1 means P = 0.73)."""
        return self.ensemble.predict(self.features(images, prompts))

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> tuple[np.ndarray, dict]:
        mean, std = self.score(images, prompts)
        info = {"rm/mean": float(mean.mean()), "rm/std": float(std.mean())}
        return (mean - self.lam * std).astype(np.float32), info

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head{i}.{k}": v.contiguous()
                   for i, h in enumerate(self.ensemble.heads) for k, v in h.state_dict().items()}
        save_file(tensors, folder / WEIGHTS_FILE)
        card = {**self.card, "lam": self.lam, "features": self.spec.to_dict(),
                "heads": [h.architecture() for h in self.ensemble.heads]}
        (folder / MODEL_FILE).write_text(json.dumps(card, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, clip: Clip, lam: float | None = None) -> RewardModel:
        """Rebuild a saved model on ``clip``, which must be the backbone it was fitted on."""
        folder = Path(folder)
        card = json.loads((folder / MODEL_FILE).read_text())
        spec = FeatureSpec(**card["features"])
        got = backbone_name(clip)
        if got != spec.backbone:
            raise BackboneMismatch(f"reward model {folder} was fitted on backbone {spec.backbone!r} but the CLIP given "
                                   f"is {got!r}; load the CLIP it was fitted on, or refit it on {got!r}")
        tensors = load_file(folder / WEIGHTS_FILE)
        heads = []
        for i, architecture in enumerate(card["heads"]):
            head = make_head(architecture)
            head.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"head{i}.")})
            heads.append(head.eval().requires_grad_(False))
        return cls(clip, HeadEnsemble(heads), spec, card, card["lam"] if lam is None else lam)


def train_reward_model(cache: EmbeddingCache, images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray],
                       prompts: Sequence[str], targets: np.ndarray,
                       config: RewardModelConfig = RewardModelConfig()) -> tuple[RewardModel, dict]:
    """Measure the recipe by cross-validation grouped by prompt, then fit it on every pair.

    ``targets`` are P(a preferred) (``bradley_terry.targets``). Returns the model and its held-out metrics,
    which its card also records.
    """
    spec = FeatureSpec(cache.backbone)
    text = cache.texts(prompts)
    fa, fb = spec(cache.images(images_a), text), spec(cache.images(images_b), text)
    targets = np.asarray(targets, np.float32)
    n_prompts = len(set(prompts))
    if n_prompts < 2:
        raise ValueError(f"labels cover {n_prompts} prompt(s); held-out evaluation grouped by prompt needs at least 2")
    held_out, _ = cross_validate(fa, fb, targets, list(prompts),
                                 lambda a, b, t: fit_ensemble(a, b, t, config).mean, min(config.n_splits, n_prompts))
    card = {"backbone": cache.backbone, "labels": int(len(targets)), "ties": int((targets == 0.5).sum()),
            "held_out_accuracy": held_out["accuracy"], "held_out": held_out, "config": asdict(config),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return RewardModel(cache.clip, fit_ensemble(fa, fb, targets, config), spec, card, config.lam), held_out
