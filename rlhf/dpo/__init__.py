"""Direct preference optimisation on labelled pairs, without a reward model: Diffusion-DPO (Wallace et al. 2023)."""
