"""DDPO settings. Defaults are kvablack/ddpo-pytorch's ``config/base.py`` unless a field says otherwise;
``toy`` holds the values measured to move the tiny toy pipeline (docs/results/ddpo_toy_sweep.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rlhf.settings import coerce, out_of_range


@dataclass
class DDPOConfig:
    # sampling: the policy is the stochastic DDIM sampler
    num_steps: int = 50
    """denoising steps per trajectory, i.e. MDP horizon"""
    eta: float = 1.0
    """DDIM stochasticity; must be > 0 for a log-probability"""
    guidance_scale: float = 5.0
    """classifier-free guidance, used both when sampling and when recomputing log-probs"""
    sample_batch_size: int = 1
    """trajectories per forward pass, per process"""
    num_batches_per_epoch: int = 2
    """sampling batches per epoch, per process; samples per epoch = this x sample_batch_size x processes"""
    samples_per_prompt: int = 1
    """trajectories drawn for each chosen prompt in a batch (the reference: 1, prompts drawn independently)"""
    balanced_prompts: bool = False
    """draw the prompts as shuffled passes over the prompt set, each prompt once per pass (not in the reference,
    which draws them independently: 10 epochs of 8 of 16 prompts then typically train one prompt 2 times, another 9)"""

    # policy-gradient update
    loss: str = "is"
    """'is' (importance sampling with a PPO-clipped ratio, DDPO-IS) or 'sf' (score function, DDPO-SF)"""
    train_batch_size: int = 1
    """trajectories per optimizer micro-batch, per process"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step; gradients also accumulate over all trained timesteps"""
    num_inner_epochs: int = 1
    """passes over each epoch's samples"""
    learning_rate: float = 3e-4
    """AdamW learning rate"""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)"""
    adam_weight_decay: float = 1e-4
    """AdamW weight decay"""
    adam_epsilon: float = 1e-8
    """AdamW epsilon"""
    max_grad_norm: float = 1.0
    """gradient norm clip per optimizer step"""
    clip_range: float = 1e-4
    """PPO clip range on the ratio of per-dimension-averaged log-probs"""
    adv_clip_max: float = 5.0
    """advantages are clipped to +- this"""
    timestep_fraction: float = 1.0
    """share of each trajectory's (shuffled) timesteps that is trained"""
    timesteps_per_forward: int = 1
    """timesteps stacked into one UNet forward during training (the reference: 1; 0: all trained timesteps); same
    gradient, better batch shape"""
    x0_baseline: bool = False
    """subtract from each step's advantage a fitted multiple of the reward of that step's predicted x_0, an unbiased
    state baseline (not in the reference; see advantages.state_baseline); costs a VAE decode and reward per step"""
    x0_baseline_history: int = 0
    """with ``x0_baseline``: fit the baseline's per-step slopes on this many samples of earlier batches
    (advantages.StateBaselineFit), not on the current batch (0); for small batches"""
    kl_coef: float = 0.0
    """weight of the per-step KL to the base model (not in the reference); guards against over-optimisation"""

    # statistics, parameters, precision
    per_prompt_stat_tracking: bool = True
    """normalise each reward by the mean and std of recent rewards of its own prompt (else of the whole batch)"""
    stat_buffer_size: int = 16
    """rewards kept per prompt for its statistics"""
    stat_min_count: int = 16
    """a prompt with fewer rewards than this is normalised by the batch statistics"""
    use_lora: bool = True
    """train a LoRA on the UNet (else fine-tune the whole UNet)"""
    lora_rank: int = 4
    """LoRA rank"""
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet modules that get a LoRA (the reference: the attention projections)"""
    mixed_precision: str = "fp16"
    """'no', 'fp16' or 'bf16'; forced to 'no' on CPU"""
    seed: int = 42
    """seed of the sampling noise and the prompt draws"""
    num_epochs: int = 100
    """epochs of sampling then updating"""
    save_every: int = 20
    """epochs between checkpoints"""
    prompts: list[str] = field(default_factory=list)
    """prompts sampled uniformly each batch"""

    def replace(self, **changes) -> "DDPOConfig":
        """A copy with ``changes``, each checked against the field's type (SettingError names a bad one)."""
        return dataclasses.replace(self, **coerce(DDPOConfig, changes))

    def validate(self) -> "DDPOConfig":
        problems = out_of_range(self, at_least=AT_LEAST, above=ABOVE, one_of=ONE_OF)
        if self.eta <= 0:
            problems.append(f"eta={self.eta} gives a deterministic sampler with no log-probability; use eta > 0 (reference: 1.0)")
        if not 0 < self.timestep_fraction <= 1:
            problems.append(f"timestep_fraction={self.timestep_fraction}; use a value in (0, 1]")
        if not all(0 <= b < 1 for b in self.adam_betas):
            problems.append(f"adam_betas={self.adam_betas}: each beta must be in [0, 1)")
        if problems:  # the checks below divide by these sizes
            raise ValueError("bad DDPO config: " + "; ".join(problems))
        if (self.sample_batch_size * self.num_batches_per_epoch) % self.train_batch_size:
            problems.append("samples per epoch must be a multiple of train_batch_size")
        if self.sample_batch_size % self.samples_per_prompt:
            problems.append(f"sample_batch_size={self.sample_batch_size} is not a multiple of samples_per_prompt={self.samples_per_prompt}")
        if self.x0_baseline_history and not self.x0_baseline:
            problems.append("x0_baseline_history needs x0_baseline=true")
        if self.x0_baseline_history < 0:
            problems.append(f"x0_baseline_history={self.x0_baseline_history} must be >= 0 (0: fit on the current batch)")
        if self.x0_baseline and self.per_prompt_stat_tracking and self.samples_per_prompt < 2:
            problems.append("x0_baseline centres predicted-x_0 rewards over each prompt's own samples; set samples_per_prompt >= 2")
        if not self.prompts:
            problems.append("no prompts; pass a prompt set such as toy_train")
        if problems:
            raise ValueError("bad DDPO config: " + "; ".join(problems))
        return self


AT_LEAST = {"num_steps": 1, "sample_batch_size": 1, "num_batches_per_epoch": 1, "samples_per_prompt": 1,
            "train_batch_size": 1, "gradient_accumulation_steps": 1, "num_inner_epochs": 1, "timesteps_per_forward": 0,
            "stat_buffer_size": 1, "stat_min_count": 1, "lora_rank": 1, "num_epochs": 0, "save_every": 0,
            "guidance_scale": 0, "adam_weight_decay": 0, "kl_coef": 0}
ABOVE = {"learning_rate": 0, "clip_range": 0, "adv_clip_max": 0, "max_grad_norm": 0, "adam_epsilon": 0}
ONE_OF = {"loss": ("is", "sf"), "mixed_precision": ("no", "fp16", "bf16")}


PRESETS: dict[str, DDPOConfig] = {
    "reference": DDPOConfig(),
    # Measured on the toy world (docs/results/ddpo_toy_sweep.md): the reference's lr 3e-4 / clip 1e-4 did not move
    # the tiny pipeline, lr 1e-2 rose then collapsed, 16 samples an epoch left the gradient to noise. 64 samples
    # (8 prompts x 8) with each prompt normalised by its own 8 samples from the first epoch; fp32 on CPU. Two
    # timesteps per forward: as fast as all ten on 2 cores, at about half the peak memory under the round's settings
    # (bench/round_ddpo_speed.py) and a third of the activation memory under ddpo_vs_trl's (bench/ddpo_vs_trl.py).
    "toy": DDPOConfig(
        num_steps=10, sample_batch_size=64, num_batches_per_epoch=1, samples_per_prompt=8, balanced_prompts=True,
        train_batch_size=8, learning_rate=3e-3, clip_range=1e-2, timesteps_per_forward=2, stat_buffer_size=32,
        stat_min_count=8, mixed_precision="no", save_every=0, num_epochs=12,
    ),
}
