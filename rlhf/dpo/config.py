"""Direct preference settings. Diffusion-DPO's ``reference`` is diffusers' ``train_diffusion_dpo.py`` example for
SD 1.5 with a LoRA (its README: rank 8, lr 1e-5, batch 16 pairs x 2 accumulation steps, 10000 steps, fp16) with the
paper's beta; D3PO's ``reference`` is the authors' ``config/base.py`` (lr 3e-5, beta 0.1, ratio clip 0.1, one pair
per step, every timestep, weight decay 1e-4, fp16). The ``toy`` presets size both for the shipped tiny pipeline on a
CPU (docs/results/dpo_toy_sweep.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rlhf.settings import coerce, out_of_range


@dataclass
class DPOConfig:
    beta: float = 5000.0
    """DPO's beta: Diffusion-DPO's -log sigmoid(-beta/2 x the error gap) (5000 is the paper's SD 1.5 value; diffusers'
    --beta_dpo 2500 is the same, written without the 1/2); D3PO's -log sigmoid(beta x the clipped log-ratio gap)"""
    learning_rate: float = 1e-5
    """AdamW learning rate (per optimizer step, before ``scale_lr``)"""
    scale_lr: bool = False
    """multiply the learning rate by train_batch_size x gradient_accumulation_steps x processes, as diffusers'
    --scale_lr does"""
    train_batch_size: int = 16
    """pairs per micro-batch, per process"""
    gradient_accumulation_steps: int = 2
    """micro-batches per optimizer step"""
    max_train_steps: int = 10000
    """optimizer steps in all"""
    use_lora: bool = True
    """train a LoRA on the UNet (else fine-tune the whole UNet against a frozen copy)"""
    lora_rank: int = 8
    """LoRA rank"""
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet modules that get a LoRA"""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)"""
    adam_weight_decay: float = 1e-2
    """AdamW weight decay"""
    adam_epsilon: float = 1e-8
    """AdamW epsilon"""
    max_grad_norm: float = 1.0
    """gradient norm clip per optimizer step"""
    mixed_precision: str = "fp16"
    """'no', 'fp16' or 'bf16'; forced to 'no' on CPU"""
    seed: int = 0
    """seed of the pair order, the timesteps and the noise"""
    save_every: int = 2000
    """optimizer steps between checkpoints (0: only at the end)"""

    def replace(self, **changes):
        """A copy with ``changes``, each checked against the field's type (SettingError names a bad one)."""
        return dataclasses.replace(self, **coerce(type(self), changes))

    def problems(self) -> list[str]:
        return out_of_range(
            self, at_least={"train_batch_size": 1, "gradient_accumulation_steps": 1, "max_train_steps": 0, "lora_rank": 1,
                            "save_every": 0, "adam_weight_decay": 0},
            above={"beta": 0, "learning_rate": 0, "max_grad_norm": 0, "adam_epsilon": 0},
            one_of={"mixed_precision": ("no", "fp16", "bf16")})

    def validate(self):
        if problems := self.problems():
            raise ValueError(f"bad {METHOD_NAMES[type(self)]} config: " + "; ".join(problems))
        return self


@dataclass
class D3POConfig(DPOConfig):
    """Diffusion-DPO's settings with the D3PO authors' defaults, and three of D3PO's own."""

    beta: float = 0.1
    learning_rate: float = 3e-5
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    adam_weight_decay: float = 1e-4
    save_every: int = 250
    clip_range: float = 0.1
    """each step's probability ratio to the reference is clipped to [1 - clip_range, 1 + clip_range]"""
    timestep_fraction: float = 1.0
    """share of each trajectory's steps a pair trains on per optimizer step (drawn at random per pair)"""
    timesteps_per_forward: int = 0
    """denoising steps stacked into one UNet forward and backward (0: all of a micro-batch's at once; 1 keeps memory
    lowest at reference scale)"""

    def problems(self) -> list[str]:
        found = super().problems() + out_of_range(self, at_least={"timesteps_per_forward": 0})
        if not 0 < self.clip_range < 1:
            found.append(f"clip_range={self.clip_range}: use a value in (0, 1)")
        if not 0 < self.timestep_fraction <= 1:
            found.append(f"timestep_fraction={self.timestep_fraction}: use a share in (0, 1]")
        return found


METHOD_NAMES = {DPOConfig: "Diffusion-DPO", D3POConfig: "D3PO"}


PRESETS: dict[str, DPOConfig] = {
    "reference": DPOConfig(),
    "toy": DPOConfig(learning_rate=3e-3, train_batch_size=8, gradient_accumulation_steps=1, max_train_steps=100,
                     lora_rank=4, mixed_precision="no", save_every=25),
}
D3PO_PRESETS: dict[str, D3POConfig] = {
    "reference": D3POConfig(),
    "toy": D3POConfig(learning_rate=1e-2, train_batch_size=8, max_train_steps=100, lora_rank=4, timestep_fraction=0.5,
                      mixed_precision="no", save_every=25),
}
METHOD_PRESETS = {"diffusion_dpo": PRESETS, "d3po": D3PO_PRESETS}
