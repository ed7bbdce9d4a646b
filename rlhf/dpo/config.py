"""Diffusion-DPO settings. ``reference`` is the setting of diffusers' ``train_diffusion_dpo.py`` example for
SD 1.5 with a LoRA (its README: rank 8, lr 1e-5, batch 16 pairs x 2 accumulation steps, 10000 steps, fp16) and the
paper's beta; ``toy`` sizes it for the shipped tiny pipeline on a CPU (batch 8, rank 4, 100 steps, fp32): its
learning rate is a starting point, not yet chosen by a measured sweep."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rlhf.settings import coerce, out_of_range


@dataclass
class DPOConfig:
    beta: float = 5000.0
    """KL weight of the loss -log sigmoid(-beta/2 * ...) (the paper's SD 1.5 value; diffusers' --beta_dpo 2500 is the
    same, written without the 1/2)"""
    learning_rate: float = 1e-5
    """AdamW learning rate (per optimizer step, before ``scale_lr``)"""
    scale_lr: bool = False
    """multiply the learning rate by train_batch_size x gradient_accumulation_steps x processes, as diffusers'
    --scale_lr does"""
    train_batch_size: int = 16
    """pairs per micro-batch, per process (each pair is two images)"""
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

    def replace(self, **changes) -> "DPOConfig":
        """A copy with ``changes``, each checked against the field's type (SettingError names a bad one)."""
        return dataclasses.replace(self, **coerce(DPOConfig, changes))

    def validate(self) -> "DPOConfig":
        problems = out_of_range(
            self, at_least={"train_batch_size": 1, "gradient_accumulation_steps": 1, "max_train_steps": 0, "lora_rank": 1,
                            "save_every": 0, "adam_weight_decay": 0},
            above={"beta": 0, "learning_rate": 0, "max_grad_norm": 0, "adam_epsilon": 0},
            one_of={"mixed_precision": ("no", "fp16", "bf16")})
        if problems:
            raise ValueError("bad Diffusion-DPO config: " + "; ".join(problems))
        return self


PRESETS: dict[str, DPOConfig] = {
    "reference": DPOConfig(),
    "toy": DPOConfig(learning_rate=1e-3, train_batch_size=8, gradient_accumulation_steps=1, max_train_steps=100,
                     lora_rank=4, mixed_precision="no", save_every=25),
}
