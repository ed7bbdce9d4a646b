"""What a round does: one flat, recorded configuration, from a preset, an optional TOML file and ``--set`` overrides.

Every round stores the config it ran with (in the store's rounds table), and a resumed round always uses its
stored config, so a crash and a re-run with other flags never mix two settings inside one round.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.ddpo.config import PRESETS as DDPO_PRESETS, DDPOConfig
from rlhf.paths import TOY_CLIP, TOY_PIPELINE
from rlhf.prompts import load_prompts


class ConfigError(ValueError):
    """A config that cannot run; the message names the setting and how to fix it."""


@dataclass(frozen=True)
class RoundConfig:
    # models
    pipeline: str = str(TOY_PIPELINE)
    """diffusers text-to-image pipeline: a local folder or a hub id"""
    clip: str = str(TOY_CLIP)
    """open_clip backbone of the reward model: a local folder or a model name such as ViT-L-14"""
    clip_pretrained: str | None = None
    """open_clip pretrained tag for a named backbone (e.g. openai)"""
    mixed_precision: str = "no"
    """'no', 'fp16' or 'bf16' for sampling and DDPO on a GPU; always fp32 on CPU"""

    # sampling and labelling
    prompts: str = "toy_train"
    """prompt set (name in data/prompts or a .txt/.csv file) that is sampled, labelled and trained on"""
    images_per_prompt: int = 8
    """images drawn per prompt per round, with the same seeds every round (before/after pairs)"""
    pairs_per_round: int = 400
    """pairs queued per round, audit pairs included"""
    audit_pairs: int = 32
    """random pairs per round kept out of training: the reward model's unbiased held-out test"""
    random_share: float = 0.25
    """share of the other pairs chosen at random rather than by ensemble disagreement"""
    labeller: str = "human"
    """'human' (people label in the app) or 'synthetic:<taste>[:<persona>]' (toy world)"""

    # reward model
    ensemble_size: int = 5
    uncertainty_penalty: float = 1.0
    """DDPO reward = ensemble mean - this x ensemble std (over-optimisation guard)"""

    # DDPO
    ddpo_preset: str = "toy"
    ddpo: dict[str, Any] = field(default_factory=lambda: {"num_epochs": 10, "kl_coef": 0.03, "save_every": 5,
                                                          "x0_baseline": True})
    """overrides of the DDPO preset (any rlhf.ddpo.config.DDPOConfig field), e.g. {num_epochs = 30}; the KL to the
    base model is the guard that keeps later rounds from drifting off the prompts, and the per-step state baseline
    is what lets 10 epochs raise a learned reward at all (both measured in the README)"""

    # evaluation
    eval_prompts: str = "toy_eval"
    eval_prompt_count: int = 32
    """the first N prompts of eval_prompts (0: all)"""
    eval_seeds: int = 16
    """fixed held-out seeds per training prompt; the demo's per-round change in the hidden score has a paired se of
    about 0.05 / sqrt(prompts x seeds), ~0.0033 here (0.005 on the noise-predicting UNet), as large as a round's gain
    (README)"""
    eval_prompt_seeds: int = 4
    """fixed seeds per eval prompt (generalisation and prompt following)"""
    aesthetic_weights: str | None = None
    """LAION aesthetic predictor weights (e.g. sac+logos+ava1-l14-linearMSE.pth for ViT-L-14), judged at eval if given"""
    hpsv2_weights: str | None = None
    """HPSv2 checkpoint (HPS_v2.1_compressed.pt), judged at eval if the file exists"""
    hpsv2_arch: str = "ViT-H-14"
    """the open_clip architecture of ``hpsv2_weights``"""
    seed: int = 0

    def validate(self) -> RoundConfig:
        problems = []
        if self.eval_seeds < 1 or self.eval_prompt_seeds < 1:
            problems.append(f"eval_seeds={self.eval_seeds}, eval_prompt_seeds={self.eval_prompt_seeds}: use at least 1 seed each")
        if self.images_per_prompt < 2:
            problems.append(f"images_per_prompt={self.images_per_prompt}: a pair needs at least 2 images per prompt")
        if not 0 <= self.audit_pairs < self.pairs_per_round:
            problems.append(f"audit_pairs={self.audit_pairs} must be below pairs_per_round={self.pairs_per_round}")
        if not 0 <= self.random_share <= 1:
            problems.append(f"random_share={self.random_share}: use a share in [0, 1]")
        if self.ddpo_preset not in DDPO_PRESETS:
            problems.append(f"ddpo_preset={self.ddpo_preset!r}: choose one of {', '.join(DDPO_PRESETS)}")
        if self.labeller != "human" and not self.labeller.startswith("synthetic:"):
            problems.append(f"labeller={self.labeller!r}: use 'human' or 'synthetic:<taste>[:<persona>]'")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"mixed_precision={self.mixed_precision!r}: use 'no', 'fp16' or 'bf16'")
        try:
            DDPO_PRESETS.get(self.ddpo_preset, DDPO_PRESETS["toy"]).replace(**self.ddpo)
        except ValueError as e:
            problems.append(f"ddpo overrides: {e}")
        if problems:
            raise ConfigError("bad round config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ddpo_config(self, round_id: int = 0) -> DDPOConfig:
        """The DDPO settings of round ``round_id``: the preset, this config's overrides, its prompts and precision.
        Round r trains with the DDPO seed + r: with one seed for all, every round replayed round 1's noise and
        prompt draws, so the prompts drawn least in round 1 were drawn least in every round."""
        prompts = [p.text for p in load_prompts(self.prompts)]
        ddpo = DDPO_PRESETS[self.ddpo_preset].replace(**{"mixed_precision": self.mixed_precision, **self.ddpo, "prompts": prompts})
        return ddpo.replace(seed=ddpo.seed + round_id)


PRESETS: dict[str, RoundConfig] = {
    "toy": RoundConfig(),
    # Stable Diffusion 1.5 with open_clip ViT-L-14 by hub id, fp16, the reference DDPO batch sizes.
    "sd15": RoundConfig(
        pipeline="stable-diffusion-v1-5/stable-diffusion-v1-5", clip="ViT-L-14", clip_pretrained="openai",
        mixed_precision="fp16", prompts="drawbench", images_per_prompt=4, pairs_per_round=400, audit_pairs=50,
        ddpo_preset="reference", ddpo={"sample_batch_size": 8, "num_batches_per_epoch": 4, "train_batch_size": 4,
                                       "num_epochs": 50, "save_every": 10},
        eval_prompts="drawbench", eval_prompt_count=0, eval_seeds=8, eval_prompt_seeds=8,
    ),
}


def _parse_value(text: str) -> Any:
    """A ``--set`` value as TOML would read it (numbers, booleans, strings with or without quotes)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(preset: str = "toy", file: str | Path | None = None, overrides: list[str] = ()) -> RoundConfig:
    """Preset, then the TOML file's keys, then ``key=value`` overrides (``ddpo.num_epochs=30`` for DDPO settings)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = PRESETS[preset].to_dict()
    if file is not None:
        try:
            values |= tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {file}: {e}") from None
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value (e.g. ddpo.num_epochs=30)")
        if key.startswith("ddpo."):
            values["ddpo"] = {**values.get("ddpo", {}), key[5:]: _parse_value(text)}
        else:
            values[key] = _parse_value(text)
    return from_dict(values)


def from_dict(values: dict[str, Any]) -> RoundConfig:
    known = {f.name for f in dataclasses.fields(RoundConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown round setting(s) {unknown}; known: {sorted(known)}")
    return RoundConfig(**values).validate()
