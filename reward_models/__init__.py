"""Reward models fitted to pairwise human (or synthetic) choices, used as the DDPO reward.

``features`` (phi: image, image * text, cosine) -> ``embeddings`` (disk cache of CLIP embeddings) ->
``bradley_terry`` (the loss) -> ``heads`` (linear / MLP heads, scikit-learn baseline) -> ``ensemble``
(K heads, ``RewardModel``: mean - lam * std, save / load) ; ``evaluate`` (held-out metrics grouped by prompt)
and ``synthetic`` (labellers with a hidden taste, and their noise ceiling).
"""
