"""``python -m rlhf.evaluate``: score a pipeline, its LoRAs or a run's rounds on a prompt set, DrawBench by default.

Every prompt x seed is drawn for the base and each tuned model on the same seeds (cached by model, policy hash,
prompt, seed and sampler, so a re-run only scores), then judged by every metric whose model is found: the LAION
aesthetic predictor, HPSv2, text alignment (caption, then sentence-embedding cosine), CLIP score and a saved
reward model; in the toy world also prompt following, the hidden tastes and a toy text alignment. A metric whose
model is missing is named in the output with how to supply it. Output under --out: results.md, results.json
(means with 95% paired bootstrap intervals, paired win rates against the base, the same per category) and a
grid-<category>.png per category; the Markdown is printed at the end.

Example:
    python -m rlhf.evaluate --rounds data/runs/demo --prompts drawbench --seeds 2
    python -m rlhf.evaluate --model stable-diffusion-v1-5/stable-diffusion-v1-5 --lora ckpt/epoch-0050 \\
        --prompts drawbench --seeds 4 --aesthetic-weights sac+logos+ava1-l14-linearMSE.pth --compare-to paper
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from reward_models.ensemble import MODEL_FILE, BackboneMismatch, RewardModel
from rlhf.ddpo.config import PRESETS as DDPO_PRESETS
from rlhf.ddpo.rewards import Aesthetic, HPSv2
from rlhf.lora import latest_checkpoint
from rlhf.evaluate.harness import Absent, Evaluation, run
from rlhf.evaluate.images import ImageCache, Model, Sampler, policy_weights
from rlhf.evaluate.metrics import AestheticScore, ClipCosine, HiddenTaste, LearnedReward, PromptFollowing
from rlhf.evaluate.report import COMPARISONS, markdown
from rlhf.evaluate.text_alignment import AnalyserCaptioner, ClipTextEmbedder, ImageToText, SentenceEncoder, TextAlignment
from rlhf.models import ModelLoadError, load_clip, resolve_pipeline
from rlhf.paths import RUNS, TOY_CLIP, TOY_PIPELINE
from rlhf.prompts import PromptFileError, load_prompts
from rlhf.round.config import ConfigError, from_dict
from rlhf.round.labellers import parse_labeller
from rlhf.store import Store
from rlhf.toy.tastes import get_taste

EVAL_DIR = RUNS / "eval"
AESTHETIC_HELP = ("no LAION aesthetic predictor weights given: pass --aesthetic-weights FILE, the predictor's MLP for "
                  "CLIP ViT-L-14 (sac+logos+ava1-l14-linearMSE.pth), as a file or a hub file org/name/file")


class UsageError(ValueError):
    """A command-line value that cannot be used; the message names it and the fix."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlhf.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--model", help="the base pipeline: a diffusers folder or hub id org/name[@revision] (default: "
                                      "the run's with --rounds), e.g. --model data/models/toy-sd")
    what.add_argument("--lora", type=Path, action="append", default=[], metavar="FOLDER",
                      help="a tuned model: a LoRA folder or a DDPO checkpoint (repeatable), e.g. --lora ckpt/epoch-0050")
    what.add_argument("--rounds", type=Path, metavar="RUN", help="evaluate every finished round of a run folder, "
                                                                  "e.g. --rounds data/runs/demo")
    what.add_argument("--prompts", default="drawbench", help="a shipped prompt set or a .txt/.csv file (default "
                                                             "drawbench), e.g. --prompts toy_eval")
    what.add_argument("--limit", type=int, default=0, metavar="N",
                      help="the first N prompts of each category (0: all), e.g. --limit 5")
    what.add_argument("--seeds", type=int, default=4, help="seeds per prompt (default 4), e.g. --seeds 2")
    draw = p.add_argument_group("how to draw (default: the run's DDPO sampler, else the toy or reference preset's)")
    draw.add_argument("--steps", type=int, help="DDIM steps, e.g. --steps 50")
    draw.add_argument("--eta", type=float, help="DDIM eta (> 0, the stochastic policy DDPO trains), e.g. --eta 1.0")
    draw.add_argument("--guidance", type=float, help="classifier-free guidance, e.g. --guidance 5")
    draw.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                      help="weights' dtype on a GPU (default: the run's, else fp16; CPUs draw in fp32), e.g. --mixed-precision no")
    judge = p.add_argument_group("metrics (a missing model is named in the output, with how to supply it)")
    judge.add_argument("--aesthetic-weights", help="LAION aesthetic predictor MLP weights, a file or hub file, e.g. "
                                                   "--aesthetic-weights sac+logos+ava1-l14-linearMSE.pth")
    judge.add_argument("--aesthetic-clip", default="ViT-L-14", help="its CLIP (default ViT-L-14), e.g. --aesthetic-clip ViT-L-14")
    judge.add_argument("--aesthetic-clip-pretrained", default="openai", help="its CLIP's pretrained tag (default openai)")
    judge.add_argument("--hpsv2-weights", default="xswu/HPSv2/HPS_v2.1_compressed.pt",
                       help="HPSv2 checkpoint, a file or hub file (default xswu/HPSv2/HPS_v2.1_compressed.pt)")
    judge.add_argument("--hpsv2-arch", default="ViT-H-14", help="its open_clip architecture (default ViT-H-14)")
    judge.add_argument("--captioner", default="Salesforce/blip-image-captioning-base",
                       help="image-to-text model for text alignment, folder or hub id (default "
                            "Salesforce/blip-image-captioning-base)")
    judge.add_argument("--sentence-model", default="sentence-transformers/all-MiniLM-L6-v2",
                       help="sentence-transformers model for text alignment, folder or hub id (default "
                            "sentence-transformers/all-MiniLM-L6-v2)")
    judge.add_argument("--clip", help="CLIP of the CLIP score and of --reward-model: folder, architecture or hub id "
                                      "(default: the run's, the toy CLIP for the toy pipeline, else ViT-L-14), e.g. --clip ViT-L-14")
    judge.add_argument("--clip-pretrained", help="pretrained tag of a named --clip (default openai for ViT-L-14)")
    judge.add_argument("--reward-model", type=Path, metavar="FOLDER",
                       help="a saved reward model (default: the last finished round's with --rounds), e.g. "
                            "--reward-model data/runs/demo/round-003/reward_model")
    judge.add_argument("--tastes", help="toy world: hidden tastes to score, comma-separated (default: the run's "
                                        "synthetic labeller's), e.g. --tastes striped,plain")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output folder (default data/runs/eval/<prompts>), e.g. --out data/runs/eval/mine")
    out.add_argument("--cache", type=Path, default=EVAL_DIR / "images",
                     help="image cache folder (default data/runs/eval/images)")
    out.add_argument("--compare-to", choices=("paper",), help="add the published DrawBench rows (SD 1.5 DDPO, LCM "
                                                               "DDPO), labelled as published, e.g. --compare-to paper")
    out.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    out.add_argument("--grid-prompts", type=int, default=6, help="prompts per category grid (default 6)")
    return p


def check_numbers(args: argparse.Namespace) -> None:
    at_least = {"--seeds": (args.seeds, 1), "--limit": (args.limit, 0), "--resamples": (args.resamples, 100),
                "--grid-prompts": (args.grid_prompts, 1), "--steps": (args.steps, 1), "--guidance": (args.guidance, 0)}
    for flag, (value, least) in at_least.items():
        if value is not None and value < least:
            raise UsageError(f"{flag} {value}: use at least {least}")
    if args.eta is not None and args.eta <= 0:
        raise UsageError(f"--eta {args.eta}: use eta > 0 (the stochastic DDIM policy the rounds train; 1.0 is the reference)")
    if args.model is None and args.rounds is None:
        raise UsageError("nothing to evaluate: pass --model <folder or hub id> (with --lora FOLDER ...) or --rounds <run folder>")


def select(prompts: list, limit: int) -> list:
    """The first ``limit`` prompts of each category, in file order (all with 0)."""
    if limit == 0:
        return prompts
    taken: dict[str | None, int] = {}
    kept = []
    for p in prompts:
        if taken.get(p.category, 0) < limit:
            taken[p.category] = taken.get(p.category, 0) + 1
            kept.append(p)
    return kept


def finished_rounds(run: Path):
    """(the last finished round's config, [(round id, policy checkpoint)]) of a run folder; a round is finished once
    its DDPO phase is."""
    if not (run / "labels.db").is_file():
        raise UsageError(f"--rounds {run}: no labels.db there, so not a run folder; name one made by "
                         "`python -m rlhf.round run --run-dir FOLDER`")
    done = [r for r in Store(run / "labels.db", create=False).rounds() if r.phase in ("eval", "done")]
    checkpoints = [(r.id, latest_checkpoint(run / f"round-{r.id:03d}" / r.config.get("method", "ddpo"))) for r in done]
    if not done or any(c is None for _, c in checkpoints):
        raise UsageError(f"--rounds {run}: no finished round with a DDPO checkpoint; finish one with "
                         f"`python -m rlhf.round run --rounds 1 --run-dir {run}`")
    configs = [from_dict(r.config) for r in done]
    if len({c.pipeline for c in configs}) > 1:
        raise UsageError(f"--rounds {run}: its rounds tuned different pipelines; evaluate each with --model and --lora")
    return configs[-1], checkpoints


def base_pipeline(model: str | None, run_cfg) -> str:
    if run_cfg is None:
        resolve_pipeline(model)
        return str(Path(model).absolute()) if Path(model).is_dir() else model
    if model is not None and resolve_pipeline(model) != resolve_pipeline(run_cfg.pipeline):
        raise UsageError(f"--model {model} is not the pipeline the run tuned ({run_cfg.pipeline}); drop --model")
    return run_cfg.pipeline


def models_of(args: argparse.Namespace, pipeline: str, checkpoints) -> list:
    rows = [Model("base", pipeline)] + [Model(f"round {rid}", pipeline, ckpt) for rid, ckpt in checkpoints]
    for folder in args.lora:
        if not folder.is_dir():
            raise UsageError(f"--lora {folder}: no such folder; pass a LoRA folder or a DDPO checkpoint folder")
        policy_weights(folder)
        rows.append(Model(f"lora {folder}", pipeline, folder.absolute()))
    return rows


def sampler_of(args: argparse.Namespace, run_cfg, toy: bool, device: torch.device):
    ddpo = run_cfg.ddpo_config() if run_cfg else DDPO_PRESETS["toy" if toy else "reference"]
    precision = args.mixed_precision or (run_cfg.mixed_precision if run_cfg else "no" if toy else "fp16")
    return Sampler(args.steps or ddpo.num_steps, args.eta if args.eta is not None else ddpo.eta,
                   args.guidance if args.guidance is not None else ddpo.guidance_scale,
                   precision if device.type == "cuda" else "no")


def tastes_of(args: argparse.Namespace, run_cfg) -> list[str]:
    if args.tastes is None:
        labeller = parse_labeller(run_cfg.labeller) if run_cfg else None
        return [labeller.persona.taste] if labeller else []
    names = [t.strip() for t in args.tastes.split(",") if t.strip()]
    for name in names:
        try:
            get_taste(name)
        except ValueError as e:
            raise UsageError(f"--tastes: {e}") from None
    return names


class Judges:
    """Builds each metric once its model is found, or an ``Absent`` naming what is missing and how to supply it."""

    def __init__(self, args: argparse.Namespace, run_cfg, checkpoints, toy: bool, device: torch.device):
        self.args, self.run_cfg, self.checkpoints, self.toy, self.device = args, run_cfg, checkpoints, toy, device
        self.clips: dict = {}

    def clip(self, name, pretrained=None):
        key = (str(name), pretrained)
        if key not in self.clips:
            self.clips[key] = load_clip(name, pretrained, device=str(self.device))
        return self.clips[key]

    def scoring_clip(self) -> tuple[str, str | None]:
        a = self.args
        if a.clip:
            return a.clip, a.clip_pretrained
        if self.run_cfg:
            return self.run_cfg.clip, self.run_cfg.clip_pretrained
        return (str(TOY_CLIP), None) if self.toy else ("ViT-L-14", a.clip_pretrained or "openai")

    def build(self, tastes: list[str]) -> list:
        judges = [self.aesthetic(), self.hpsv2(), self.text_alignment(), self.clip_score(), self.learned_reward()]
        if self.toy:
            judges += [PromptFollowing()] + [HiddenTaste(t) for t in tastes]
            judges.append(TextAlignment(AnalyserCaptioner(), ClipTextEmbedder(self.clip(TOY_CLIP)),
                                        "toy_text_alignment", "toy text alignment"))
        return judges

    def aesthetic(self):
        a, title = self.args, AestheticScore.title
        if not a.aesthetic_weights:
            return Absent("aesthetic", title, AESTHETIC_HELP)
        try:
            clip = self.clip(a.aesthetic_clip, a.aesthetic_clip_pretrained)
            aesthetic = Aesthetic(clip, a.aesthetic_weights)
        except ModelLoadError as e:
            return Absent("aesthetic", title, f"{e} (--aesthetic-weights, --aesthetic-clip)")
        except (KeyError, RuntimeError, OSError) as e:
            return Absent("aesthetic", title, f"cannot read {a.aesthetic_weights} as the predictor's MLP ({e}); pass "
                                              "the LAION aesthetic predictor's .pth file")
        want, got = aesthetic.head.layers[0].in_features, clip.model.visual.output_dim
        if want != got:
            return Absent("aesthetic", title, f"the weights take {want}-d embeddings but {a.aesthetic_clip} gives {got}-d; "
                                              "pass the --aesthetic-clip they were fitted on (ViT-L-14 for LAION's)")
        return AestheticScore(aesthetic)

    def hpsv2(self):
        try:
            return ClipCosine(HPSv2(self.args.hpsv2_weights, self.args.hpsv2_arch, device=str(self.device)).clip,
                              "hpsv2", "HPSv2")
        except ModelLoadError as e:
            return Absent("hpsv2", "HPSv2", f"{e} (--hpsv2-weights)")

    def text_alignment(self):
        parts, problems = [], []
        for flag, kind in (("--captioner", ImageToText), ("--sentence-model", SentenceEncoder)):
            try:
                parts.append(kind(getattr(self.args, flag[2:].replace("-", "_")), device=self.device))
            except ModelLoadError as e:
                problems.append(f"{e} ({flag})")
        return Absent("text_alignment", "text alignment", "; ".join(problems)) if problems else TextAlignment(*parts)

    def clip_score(self):
        try:
            return ClipCosine(self.clip(*self.scoring_clip()))
        except ModelLoadError as e:
            return Absent("clip_score", "CLIP score", f"{e} (--clip)")

    def learned_reward(self):
        folder = self.args.reward_model
        if folder is None and self.checkpoints:
            folder = self.args.rounds / f"round-{self.checkpoints[-1][0]:03d}" / "reward_model"
        if folder is None:
            return Absent("learned_reward", "learned reward", "no reward model given: pass --reward-model FOLDER (a "
                                                              "round's reward_model/), or --rounds RUN")
        if not (folder / MODEL_FILE).is_file():
            return Absent("learned_reward", "learned reward", f"no {MODEL_FILE} in {folder}: pass a reward model "
                                                              "folder saved by a round's reward phase (--reward-model)")
        try:
            return LearnedReward(RewardModel.load(folder, self.clip(*self.scoring_clip())))
        except (ModelLoadError, BackboneMismatch) as e:
            return Absent("learned_reward", "learned reward", f"{e} (--clip)")


def plan(args: argparse.Namespace):
    """Check every input, then find the models: (the evaluation, its output folder, its device)."""

    check_numbers(args)
    prompts = select(load_prompts(args.prompts), args.limit)
    run_cfg, checkpoints = finished_rounds(args.rounds) if args.rounds else (None, [])
    pipeline = base_pipeline(args.model, run_cfg)
    models = models_of(args, pipeline, checkpoints)
    tastes = tastes_of(args, run_cfg)
    if args.reward_model is not None and not args.reward_model.is_dir():
        raise UsageError(f"--reward-model {args.reward_model}: no such folder; pass a round's reward_model/ folder")
    toy = Path(resolve_pipeline(pipeline)[0]).resolve() == TOY_PIPELINE.resolve()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampler = sampler_of(args, run_cfg, toy, device)
    source = Path(args.prompts).stem
    judges = Judges(args, run_cfg, checkpoints, toy, device).build(tastes)
    settings = {k: str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v
                for k, v in vars(args).items()}
    ev = Evaluation(models, prompts, source, args.seeds, sampler, judges,
                    COMPARISONS.get(args.compare_to), args.resamples, args.grid_prompts, settings)
    return ev, args.out or EVAL_DIR / source, device


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    try:
        ev, out, device = plan(args)
    except (UsageError, ModelLoadError, PromptFileError, ConfigError) as e:
        sys.exit(f"error: {e}")
    result = run(ev, out, ImageCache(args.cache), device)
    print(markdown(result))
    print(f"tables: {out / 'results.md'}, {out / 'results.json'}; grids: {', '.join(result['grids'].values())}; "
          f"{result['timing']['images_drawn']} images drawn, {result['timing']['images_scored']} scored")
    return result


if __name__ == "__main__":
    main()
