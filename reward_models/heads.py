"""Reward heads on phi features, fitted to pairwise choices with the Bradley-Terry loss.

The strongest image-preference models are small heads on frozen CLIP-like features (the LAION aesthetic
predictor and ImageReward's head are effectively linear), so a linear head is the default and a one-hidden-
layer MLP the step up. Every head divides its inputs by one number, the training features' overall spread, so
that one weight decay suits every backbone while the embedding's own geometry stays the prior: the image x
text products are small, so regularisation keeps them small unless the labels need them. (Standardising each
feature instead made them as cheap as the image features: 0.95 instead of 0.96-0.97 of the noise ceiling.)
Every head also subtracts its mean training score: a Bradley-Terry score has no natural zero, and a shared
zero makes several heads' scores comparable in an ensemble.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from reward_models.bradley_terry import bt_loss

_MIN_SCALE = 1e-6


class Head(torch.nn.Module):
    """Base: ``forward(features) = score(features * scale) - offset``; subclasses define ``score``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("offset", torch.zeros(()))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features * self.scale) - self.offset

    def architecture(self) -> dict:
        raise NotImplementedError

    def fit_scale(self, features: torch.Tensor) -> None:
        self.scale.copy_(1 / features.std().clamp_min(_MIN_SCALE))

    @torch.no_grad()
    def fit_offset(self, features: torch.Tensor) -> None:
        self.offset.zero_()
        self.offset.copy_(self(features).mean())


class LinearHead(Head):
    """w . phi, without bias: a bias cancels in every within-prompt difference."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.linear = torch.nn.Linear(dim, 1, bias=False)
        torch.nn.init.zeros_(self.linear.weight)  # directions no pair constrains stay at zero

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)

    def architecture(self) -> dict:
        return {"kind": "linear", "dim": self.dim}


class MLPHead(Head):
    """One hidden GELU layer: lets the taste combine features non-linearly (e.g. 'large AND warm')."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__(dim)
        self.hidden = hidden
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def architecture(self) -> dict:
        return {"kind": "mlp", "dim": self.dim, "hidden": self.hidden}


def make_head(architecture: dict) -> Head:
    """A fresh head from ``Head.architecture()``; how saved ensembles are rebuilt."""
    kinds = {"linear": LinearHead, "mlp": MLPHead}
    kind = architecture.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown head kind {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind](**{k: v for k, v in architecture.items() if k != "kind"})


@dataclass(frozen=True)
class HeadConfig:
    """How one head is built and fitted."""

    kind: str = "linear"
    """'linear' or 'mlp'."""
    hidden: int = 64
    """Width of the MLP's hidden layer (ignored by 'linear')."""
    epochs: int = 200
    """Passes over the pairs; full-batch, one AdamW step per pass unless ``batch_size`` is set."""
    lr: float = 2e-2
    """AdamW learning rate."""
    l2: float = 10.0
    """L2 penalty on weight matrices, added to the loss as l2 * |W|^2 / (2 * total sample weight): the prior of
    ``LogisticRegression(C=1 / l2)``, which a converged linear head matches. 10 did best of 3, 10, 30 on the toy
    CLIP (1000 labels of large_warm: 0.96-0.97 of the noise ceiling)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay. Off by default: under Adam's per-coordinate steps it regularises every
    feature alike, as standardising them would, and lost 1-3 points against the L2 penalty (0.94-0.96 of the
    noise ceiling)."""
    batch_size: int | None = None
    """Pairs per minibatch; None for full batch (fine up to tens of thousands of pairs of CLIP features)."""

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "mlp"):
            raise ValueError(f"unknown head kind {self.kind!r}; expected 'linear' or 'mlp'")

    def build(self, dim: int) -> Head:
        return MLPHead(dim, self.hidden) if self.kind == "mlp" else LinearHead(dim)


def _squared_weights(head: Head) -> torch.Tensor:
    """|W|^2 over weight matrices; biases stay free, as in LogisticRegression."""
    return sum(p.pow(2).sum() for p in head.parameters() if p.ndim > 1)


def fit_head(features_a: np.ndarray, features_b: np.ndarray, targets: np.ndarray, config: HeadConfig = HeadConfig(),
             *, sample_weight: np.ndarray | None = None, seed: int = 0) -> Head:
    """Fit a head with AdamW on the Bradley-Terry loss plus the L2 penalty.

    ``targets`` are P(a preferred) (see ``bradley_terry``); ``sample_weight`` carries bootstrap counts.
    """
    torch.manual_seed(seed)
    x = torch.stack([torch.as_tensor(features_a, dtype=torch.float32),
                     torch.as_tensor(features_b, dtype=torch.float32)])  # (2, N, F): sides a and b
    t = torch.as_tensor(targets, dtype=torch.float32)
    w = torch.ones_like(t) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    head = config.build(x.shape[-1])
    head.fit_scale(x.flatten(0, 1))
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(t)
    batches = [slice(None)] if config.batch_size is None else None
    head.train()
    for _ in range(config.epochs):
        if config.batch_size is not None:
            batches = torch.randperm(n, generator=gen).split(config.batch_size)
        for idx in batches:
            scores = head(x[:, idx])  # (2, B)
            opt.zero_grad()
            loss = bt_loss(scores[0], scores[1], t[idx], w[idx])
            (loss + config.l2 * _squared_weights(head) / (2 * w.sum())).backward()
            opt.step()
    head.eval()
    head.fit_offset(x.flatten(0, 1))
    return head.requires_grad_(False)


def fit_logistic(features_a: np.ndarray, features_b: np.ndarray, targets: np.ndarray, *, C: float = 0.1,
                 sample_weight: np.ndarray | None = None) -> LinearHead:
    """The scikit-learn baseline: ``LogisticRegression(fit_intercept=False)`` on phi(a) - phi(b), as a LinearHead.

    Each pair becomes a row labelled 1 with weight ``target`` and one labelled 0 with weight ``1 - target``
    (a tie: two rows of weight 0.5); each row is mirrored (-d, 1 - y) at half weight so that both classes
    exist even when every pair is stored winner-first. Mirroring leaves the loss unchanged. ``C`` = 0.1 did best
    of 0.01-0.3 on the toy CLIP (0.97 of the noise ceiling with 1000 labels).
    """
    fa, fb = np.asarray(features_a, np.float32), np.asarray(features_b, np.float32)
    t = np.asarray(targets, np.float64)
    w = np.ones_like(t) if sample_weight is None else np.asarray(sample_weight, np.float64)
    head = LinearHead(fa.shape[1])
    head.fit_scale(torch.from_numpy(np.concatenate([fa, fb])))
    d = (fa - fb) * head.scale.numpy()
    x = np.concatenate([d, d, -d, -d])
    y = np.concatenate([np.ones_like(t), np.zeros_like(t), np.zeros_like(t), np.ones_like(t)])
    weights = np.concatenate([t, 1 - t, t, 1 - t]) * np.tile(w, 4) / 2
    keep = weights > 0
    model = LogisticRegression(C=C, l1_ratio=0.0, fit_intercept=False, max_iter=1000)
    model.fit(x[keep], y[keep], sample_weight=weights[keep])
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(model.coef_.astype(np.float32)))
    head.fit_offset(torch.from_numpy(np.concatenate([fa, fb])))
    return head.requires_grad_(False)
