"""Which pairs to label next: a fixed random audit set, a share of random pairs, and the rest chosen actively.

A pair is worth a label when the reward model does not yet know its answer *and* a label would tell it: the
BALD score (Houlsby et al. 2011) of the Bradley-Terry outcome, H[mean_k p_k] - mean_k H[p_k] with
p_k = sigmoid(s_k(a) - s_k(b)) for each ensemble head k. It is high where heads disagree confidently and low on
pairs every head calls a coin flip (near-equal images, whose label is noise; plain uncertainty sampling wastes
labels on exactly those). Disagreement alone picks redundant pairs (many near-copies of one hard case), so
active pairs are spread over prompts: at most one per prompt per round, going round again only when more pairs
are needed than prompts. A share of uniform random pairs keeps the labelled set covering the whole
distribution, and the audit pairs, drawn first and uniformly, give the caller an unbiased held-out accuracy
(they must never be trained on).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch

from reward_models.ensemble import HeadEnsemble


def candidate_pairs(prompts: Sequence[str], exclude: Collection[tuple[int, int]] = frozenset()) -> np.ndarray:
    """(M, 2) every (i, j), i < j, of two images of one prompt, minus ``exclude`` (either order)."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    lonely = [p for p, idx in by_prompt.items() if len(idx) < 2]
    if lonely:
        raise ValueError(f"{len(lonely)} prompt(s) have a single image (first: {lonely[0]!r}); "
                         "a pair needs two images of the same prompt")
    chunks = [np.asarray(idx)[np.stack(np.triu_indices(len(idx), k=1), 1)] for idx in by_prompt.values()]
    pairs = np.concatenate(chunks) if chunks else np.zeros((0, 2), int)
    if exclude:
        n = len(prompts)
        skip = [min(a, b) * n + max(a, b) for a, b in exclude]
        pairs = pairs[~np.isin(pairs[:, 0] * n + pairs[:, 1], skip)]
    return pairs


@torch.no_grad()
def pair_information(ensemble: HeadEnsemble, features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """BALD mutual information (nats) between each pair's label and the ensemble's heads."""
    x = torch.as_tensor(features, dtype=torch.float32)
    scores = torch.stack([h(x) for h in ensemble.heads]).double()  # (K, N)
    p = torch.sigmoid(scores[:, pairs[:, 0]] - scores[:, pairs[:, 1]]).clamp(1e-12, 1 - 1e-12)  # (K, M)

    def entropy(q: torch.Tensor) -> torch.Tensor:
        return -(q * q.log() + (1 - q) * (1 - q).log())

    return (entropy(p.mean(0)) - entropy(p).mean(0)).numpy()


def _rounds(prompt_of: np.ndarray) -> np.ndarray:
    """For pairs sorted best first: 0 for each prompt's best pair, 1 for its second best, and so on."""
    by_prompt = np.argsort(prompt_of, kind="stable")  # each prompt's pairs together, still best first
    starts = np.flatnonzero(np.r_[True, np.diff(prompt_of[by_prompt]) != 0])
    rounds = np.empty(len(prompt_of), int)
    rounds[by_prompt] = np.arange(len(prompt_of)) - np.repeat(starts, np.diff(np.r_[starts, len(prompt_of)]))
    return rounds


def select_pairs(prompts: Sequence[str], features: np.ndarray | None, ensemble: HeadEnsemble | None, n_pairs: int, *,
                 random_share: float = 0.25, n_audit: int = 0, exclude: Collection[tuple[int, int]] = frozenset(),
                 seed: int = 0) -> list[tuple[int, int, str]]:
    """``n_pairs`` pairs (i, j, tag) of images of one prompt, i < j, none twice and none in ``exclude``.

    ``prompts[i]`` is image i's prompt and ``features[i]`` its phi features; ``exclude`` should hold every pair
    already labelled or queued. ``n_pairs`` counts every pair returned. Tags, in the order returned:
    ``n_audit`` 'audit' pairs (uniform, and the same for a seed whatever the model), then
    ``round(random_share * (n_pairs - n_audit))`` 'random' pairs (uniform), then 'active' pairs by decreasing
    information, at most one per prompt per round. Without an ensemble (no labels yet) every non-audit pair is
    random. Deterministic given the inputs and ``seed``.
    """
    if features is not None and len(features) != len(prompts):
        raise ValueError(f"features has {len(features)} rows for {len(prompts)} images; give one row per image")
    if ensemble is not None and features is None:
        raise ValueError("active selection needs the images' features; pass features with the ensemble")
    if not 0 <= random_share <= 1:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    if not 0 <= n_audit <= n_pairs:
        raise ValueError(f"need 0 <= n_audit <= n_pairs, got n_audit={n_audit}, n_pairs={n_pairs}")
    pairs = candidate_pairs(prompts, exclude)
    if n_pairs > len(pairs):
        raise ValueError(f"asked for {n_pairs} pairs but these images give only {len(pairs)} new same-prompt pairs")
    order = pairs[np.random.default_rng(seed).permutation(len(pairs))]  # the seed fixes audit, random and ties
    n_random = n_pairs - n_audit if ensemble is None else round(random_share * (n_pairs - n_audit))
    n_uniform = n_audit + n_random
    rest = order[n_uniform:]
    active = np.zeros((0, 2), int)
    if n_pairs > n_uniform:
        by_info = rest[np.argsort(-pair_information(ensemble, features, rest), kind="stable")]
        prompt_ids = np.unique(np.asarray(prompts, dtype=str), return_inverse=True)[1]
        active = by_info[np.argsort(_rounds(prompt_ids[by_info[:, 0]]), kind="stable")][:n_pairs - n_uniform]
    tags = ["audit"] * n_audit + ["random"] * n_random + ["active"] * len(active)
    return [(int(i), int(j), tag) for (i, j), tag in zip(np.concatenate([order[:n_uniform], active]), tags)]
