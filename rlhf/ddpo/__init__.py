"""DDPO (Black et al. 2023, "Training Diffusion Models with Reinforcement Learning"): the pure maths.

`logprob` gives each stochastic DDIM step its Gaussian log-density (the policy), `loss` the policy-gradient
surrogates DDPO_SF and DDPO_IS, and `advantages` the per-prompt reward normalisation that serves as baseline, with an optional per-step
state baseline.
"""
