"""What a round does: one flat, recorded configuration, from a preset, an optional TOML file and ``--set`` overrides.

Every round stores the config it ran with (in the store's rounds table), and a resumed round always uses its
stored config, so a crash and a re-run with other flags never mix two settings inside one round.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.ddpo.config import PRESETS as DDPO_PRESETS, DDPOConfig
from rlhf.dpo.config import METHOD_PRESETS, D3POConfig, DPOConfig
from rlhf.paths import TOY_CLIP, TOY_PIPELINE
from rlhf.prompts import PromptFileError, load_prompts
from rlhf.settings import SettingError, coerce, out_of_range, parse_override


class ConfigError(ValueError):
    """A config that cannot run; the message names the setting and how to fix it."""


@dataclass(frozen=True)
class RoundConfig:
    # models
    pipeline: str = str(TOY_PIPELINE)
    """diffusers text-to-image pipeline: a local folder or a hub id org/name[@revision]"""
    clip: str = str(TOY_CLIP)
    """open_clip backbone of the reward model: a local folder, a model name such as ViT-L-14, or a hub id"""
    clip_pretrained: str | None = None
    """open_clip pretrained tag (e.g. openai) or weights file of a named backbone"""
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
    """reward heads in the ensemble, each fitted on a bootstrap of the labels; their spread is the uncertainty"""
    uncertainty_penalty: float = 1.0
    """DDPO reward = ensemble mean - this x ensemble std (over-optimisation guard)"""

    # training
    method: str = "ddpo"
    """how the labels train the policy: 'ddpo' (against the reward model), or on the labelled pairs themselves with
    'diffusion_dpo' or 'd3po' (the reward model is fitted either way, for active selection and the reports)"""
    ddpo_preset: str = "toy"
    """DDPO preset the ``ddpo`` overrides apply to: 'toy' (measured on the toy world) or 'reference' (ddpo-pytorch)"""
    ddpo: dict[str, Any] = field(default_factory=lambda: {"num_epochs": 10, "kl_coef": 0.03, "save_every": 5,
                                                          "x0_baseline": True})
    """overrides of the DDPO preset (any DDPO setting below), e.g. {num_epochs = 30}; the default is the toy world's
    (the sd15, sdxl and lcm presets set their own): the KL to the base model guards later rounds against drifting off
    the prompts, and the per-step state baseline is what lets 10 epochs raise a learned reward
    (docs/results/state_baseline.md); its sampler settings (num_steps, eta, guidance_scale) draw every round's
    images, whatever the method"""
    dpo_preset: str = "toy"
    """preset of the direct method ('toy' or 'reference') the ``dpo`` overrides apply to"""
    dpo: dict[str, Any] = field(default_factory=dict)
    """overrides of the direct method's preset (any Diffusion-DPO or D3PO setting below), e.g. {learning_rate = 1e-4}"""

    # evaluation
    eval_prompts: str = "toy_eval"
    """prompt set (name or file) that judges generalisation and prompt following; never trained on"""
    eval_prompt_count: int = 32
    """the first N prompts of eval_prompts (0: all)"""
    eval_seeds: int = 16
    """fixed held-out seeds per training prompt; the demo's per-round change in the hidden score has a paired se of
    about 0.05 / sqrt(prompts x seeds), ~0.0033 here (docs/results/demo.md)"""
    eval_prompt_seeds: int = 4
    """fixed seeds per eval prompt (generalisation and prompt following)"""
    aesthetic_weights: str | None = None
    """LAION aesthetic predictor weights for the CLIP backbone (e.g. sac+logos+ava1-l14-linearMSE.pth for ViT-L-14):
    a file or a hub file org/name/file; judged at eval when given"""
    hpsv2_weights: str | None = None
    """HPSv2 checkpoint: a file or a hub file (xswu/HPSv2/HPS_v2.1_compressed.pt); judged at eval when given"""
    hpsv2_arch: str = "ViT-H-14"
    """the open_clip architecture of ``hpsv2_weights``"""
    seed: int = 0
    """seed of pair selection and reward-model fitting"""

    def validate(self) -> RoundConfig:
        """Every check that needs no model: types, ranges, choices, the prompt files, the labeller and the whole
        DDPO config the rounds will train with. Raises ConfigError with one line."""
        from rlhf.round.labellers import parse_labeller

        problems = out_of_range(self, at_least={"images_per_prompt": 2, "pairs_per_round": 1, "audit_pairs": 0,
                                                "ensemble_size": 1, "uncertainty_penalty": 0, "eval_prompt_count": 0,
                                                "eval_seeds": 1, "eval_prompt_seeds": 1},
                                one_of={"ddpo_preset": tuple(DDPO_PRESETS), "mixed_precision": ("no", "fp16", "bf16"),
                                        "method": ("ddpo", *METHOD_PRESETS), "dpo_preset": ("toy", "reference")})
        if not problems and self.audit_pairs >= self.pairs_per_round:
            problems.append(f"audit_pairs={self.audit_pairs} must be below pairs_per_round={self.pairs_per_round}")
        if not 0 <= self.random_share <= 1:
            problems.append(f"random_share={self.random_share}: use a share in [0, 1]")
        try:
            parse_labeller(self.labeller)
        except ValueError as e:
            problems.append(f"labeller={self.labeller!r}: {e}")
        for key in ("prompts", "eval_prompts"):
            try:
                load_prompts(getattr(self, key))
            except PromptFileError as e:
                problems.append(f"{key}: {e}")
        if not problems:
            try:
                self.ddpo_config().validate()
            except ValueError as e:
                problems.append("ddpo: " + str(e).removeprefix("bad DDPO config: "))
        if not problems and self.method != "ddpo":
            problems += [f"dpo: {problem}" for problem in self.direct_config().problems()]
        if problems:
            raise ConfigError("bad round config: " + "; ".join(problems))
        return self

    def check_models(self) -> RoundConfig:
        """Find every model this config names (a folder, or a hub id in the cache or on the hub) without loading it,
        so a missing one costs one line before anything is drawn. Raises ModelLoadError."""
        from rlhf.models import resolve_clip, resolve_file, resolve_pipeline

        resolve_pipeline(self.pipeline)
        resolve_clip(self.clip, self.clip_pretrained)
        if self.aesthetic_weights:
            resolve_file(self.aesthetic_weights, "aesthetic head weights")
        if self.hpsv2_weights:
            resolve_file(self.hpsv2_weights, "HPSv2 checkpoint")
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

    def direct_config(self, round_id: int = 0) -> DPOConfig:
        """The Diffusion-DPO or D3PO settings of round ``round_id``: the preset, the ``dpo`` overrides, the precision,
        and the seed + round_id."""
        direct = METHOD_PRESETS[self.method][self.dpo_preset].replace(**{"mixed_precision": self.mixed_precision, **self.dpo})
        return direct.replace(seed=direct.seed + round_id)


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
    # SDXL base at its native 1024 px, fp16: batches a quarter of SD 1.5's per process, the same samples per epoch.
    "sdxl": RoundConfig(
        pipeline="stabilityai/stable-diffusion-xl-base-1.0", clip="ViT-L-14", clip_pretrained="openai",
        mixed_precision="fp16", prompts="drawbench", images_per_prompt=4, pairs_per_round=400, audit_pairs=50,
        ddpo_preset="reference", ddpo={"sample_batch_size": 2, "num_batches_per_epoch": 16, "train_batch_size": 1,
                                       "gradient_accumulation_steps": 4, "num_epochs": 50, "save_every": 10},
        eval_prompts="drawbench", eval_prompt_count=0, eval_seeds=8, eval_prompt_seeds=8,
    ),
    # The LCM paper's Dreamshaper v7 distillation: 4 consistency steps, its guidance 8.5 embedded in the UNet.
    "lcm": RoundConfig(
        pipeline="SimianLuo/LCM_Dreamshaper_v7", clip="ViT-L-14", clip_pretrained="openai",
        mixed_precision="fp16", prompts="drawbench", images_per_prompt=4, pairs_per_round=400, audit_pairs=50,
        ddpo_preset="reference", ddpo={"num_steps": 4, "guidance_scale": 8.5, "sample_batch_size": 8,
                                       "num_batches_per_epoch": 4, "train_batch_size": 4, "num_epochs": 50, "save_every": 10},
        eval_prompts="drawbench", eval_prompt_count=0, eval_seeds=8, eval_prompt_seeds=8,
    ),
}


TABLES = {"ddpo": "num_epochs = 30", "dpo": "learning_rate = 1e-4"}
"""The settings that nest another config's overrides, with an example line of each."""


def merge(values: dict[str, Any], file: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """``values`` (a config as a dict), then the TOML file's keys, then ``key=value`` overrides
    (``ddpo.num_epochs=30`` for DDPO settings, ``dpo.beta=2500`` for the direct method's); the keys of the file's
    ``[ddpo]`` and ``[dpo]`` tables and those overrides add to the tables."""
    values = dict(values)
    if file is not None:
        try:
            loaded = tomllib.loads(Path(file).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {file}: {e}") from None
        for table, example in TABLES.items():
            if not isinstance(loaded.get(table, {}), dict):
                raise ConfigError(f"{file}: {table} must be a table ([{table}] with {example} and so on)")
        values |= loaded | {t: {**values.get(t, {}), **loaded.get(t, {})} for t in TABLES}
    try:
        for key, value in map(parse_override, overrides):
            table, dot, name = key.partition(".")
            if dot and table in TABLES:
                values[table] = {**values.get(table, {}), name: value}
            else:
                values[key] = value
    except SettingError as e:
        raise ConfigError(str(e)) from None
    return values


def load_config(preset: str = "toy", file: str | Path | None = None, overrides: list[str] = ()) -> RoundConfig:
    """Preset, then the TOML file's keys, then ``key=value`` overrides; typed and validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return from_dict(merge(PRESETS[preset].to_dict(), file, overrides))


def from_dict(values: dict[str, Any]) -> RoundConfig:
    """A validated config from a dict (a stored round's, or a merged preset), each value converted to its type."""
    try:
        typed = coerce(RoundConfig, values)
        typed["ddpo"] = coerce(DDPOConfig, typed.get("ddpo", {}), prefix="ddpo.")
        typed["dpo"] = coerce(direct_class(typed.get("method", "ddpo")), typed.get("dpo", {}), prefix="dpo.")
    except SettingError as e:
        raise ConfigError(f"bad round config: {e}") from None
    return RoundConfig(**typed).validate()


def direct_class(method: str) -> type[DPOConfig]:
    """The settings class of a method's ``dpo`` overrides (D3PO's adds to Diffusion-DPO's)."""
    return D3POConfig if method == "d3po" else DPOConfig


def _toml(value: Any) -> str:
    """A default as it would be written in a TOML file (paths inside the project relative to it)."""
    from rlhf.paths import ROOT

    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace(f"{ROOT}/", "") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def reference() -> str:
    """docs/config.md: every round, DDPO and Diffusion-DPO setting with its type, its default in each preset and its
    docstring."""
    from rlhf.dpo.config import D3PO_PRESETS, PRESETS as DPO_PRESETS
    from rlhf.settings import describe, field_docs

    def table(cls, columns: dict[str, Any], skip: set[str] = set()) -> list[str]:
        hints = typing.get_type_hints(cls)
        lines = ["| setting | type | " + " | ".join(columns) + " | meaning |", "|---" * (len(columns) + 3) + "|"]
        for name, doc in field_docs(cls).items():
            if name in skip:
                continue
            values = " | ".join(f"`{_toml(getattr(c, name))}`" if hasattr(c, name) else "-" for c in columns.values())
            lines.append(f"| `{name}` | {describe(hints[name])} | {values} | {doc.replace('|', '/')} |")
        return lines

    rounds = {f"`--preset {name}`": preset for name, preset in PRESETS.items()}
    ddpo = {f"round `{name}`": DDPO_PRESETS[p.ddpo_preset].replace(**{"mixed_precision": p.mixed_precision, **p.ddpo})
            for name, p in PRESETS.items()}
    ddpo |= {f"`rlhf.ddpo --preset {name}`": preset for name, preset in DDPO_PRESETS.items()}
    return "\n".join([
        "# Settings reference",
        "",
        "Generated from the settings' own docstrings by `python -m rlhf.round.config --markdown > docs/config.md`;",
        "a test fails when this page and the code disagree.",
        "",
        "A round's settings are its preset's (`--preset`), then a TOML file's keys (`--config`), then each",
        "`--set KEY=VALUE` (DDPO settings as `ddpo.KEY`, or in the TOML file's `[ddpo]` table). Each value is converted",
        "to its setting's type and checked, with the whole config, before any work starts; a round keeps the settings",
        "it started with (`python -m rlhf.round reconfigure` replaces them). `python -m rlhf.ddpo` takes the DDPO",
        "settings alone, as `--set KEY=VALUE`.",
        "",
        "## Round settings",
        "",
        *table(RoundConfig, rounds, skip={"ddpo", "dpo"}),
        "",
        "## DDPO settings",
        "",
        "A round trains with its `ddpo_preset` plus its `ddpo` overrides; the first two columns are what the round",
        "presets end up with. `prompts` is the round's `prompts` set (or `rlhf.ddpo --prompts`).",
        "",
        *table(DDPOConfig, ddpo, skip={"prompts"}),
        "",
        "## Diffusion-DPO and D3PO settings",
        "",
        "A round with `method = \"diffusion_dpo\"` or `\"d3po\"` trains with that method's `dpo_preset` plus its `dpo`",
        "overrides (`--set dpo.KEY=VALUE`, or the TOML file's `[dpo]` table). `python -m rlhf.dpo --pairs FILE` trains on",
        "labelled pairs alone, from `--method`, `--preset` and `--set KEY=VALUE`. D3PO has the last three settings",
        "besides Diffusion-DPO's.",
        "",
        *table(D3POConfig, {f"Diffusion-DPO `{name}`": preset for name, preset in DPO_PRESETS.items()}
               | {f"D3PO `{name}`": preset for name, preset in D3PO_PRESETS.items()}),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlhf.round.config",
                                     description="Print the settings reference (docs/config.md).")
    parser.add_argument("--markdown", action="store_true", required=True,
                        help="print it as Markdown, e.g. python -m rlhf.round.config --markdown > docs/config.md")
    parser.parse_args(argv)
    print(reference(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
