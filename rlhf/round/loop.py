"""The round state machine: sample -> queue -> label -> reward -> train -> eval -> done, then the next round.

The phase lives in the label store's rounds table, so the app, the trainer and the driver agree on it. Every
phase is idempotent and writes each result either as one store transaction or as a file renamed into place
when complete, and the phase advances only after its work is durable. A crash anywhere therefore costs at most
the unfinished phase's remaining work: images already recorded are skipped (each image depends only on its
prompt, seed and policy), pairs are re-derived deterministically and queued idempotently, labels are never
touched, and a half-written reward model or checkpoint is never read.

Run folder layout (image paths in the store are relative to the run folder's parent, the app's data folder)::

    labels.db  rounds.json  report.md  embeddings/  eval/base-*.npy
    images/round-001/p0003-s3001.png ...  (and p0003-s3001.traj.npz, its chain, in a d3po round)
    round-001/reward_model/  round-001/ddpo/checkpoints/epoch-0030/  round-001/eval.json  round-001/report.md
    (a direct method's checkpoints: round-001/diffusion_dpo/checkpoints/step-000100/, or round-001/d3po/...)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image

from reward_models.bradley_terry import targets as choice_targets
from reward_models.embeddings import EmbeddingCache
from reward_models.ensemble import MODEL_FILE, RewardModel, RewardModelConfig, fit_ensemble, train_reward_model
from reward_models.evaluate import learning_curve, pair_metrics, reliability_diagram
from rlhf.ddpo.rewards import Aesthetic, ClipScore, HPSv2
from rlhf.ddpo.sampling import sample_trajectories
from rlhf.ddpo.trainer import DDPOTrainer
from rlhf.dpo.d3po import D3POTrainer, require_trajectories
from rlhf.dpo.data import PreferencePair
from rlhf.dpo.trainer import DiffusionDPOTrainer
from rlhf.dpo.trajectory import Trajectory, save_trajectory, trajectory_path
from rlhf.evaluate.images import load_policy
from rlhf.faults import crashpoint
from rlhf.lora import latest_checkpoint
from rlhf.models import load_clip, load_pipeline, precision_dtype
from rlhf.prompts import load_prompts
from rlhf.round import evaluate, report
from rlhf.round.config import ConfigError, RoundConfig, from_dict
from rlhf.round.labellers import label_coverage, label_round, load_image, parse_labeller
from rlhf.store import Round, Store

PHASES = ("sample", "queue", "label", "reward", "train", "eval", "done")
MIN_LABELS = 5
"""Fewer usable labels than this cannot fit, let alone evaluate, a reward model."""


class RoundError(RuntimeError):
    """A round cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Outcome:
    round_id: int
    phase: str
    """the phase that ran"""
    message: str
    waiting: bool = False
    """True when the phase waits for people to label; nothing advanced"""


def image_seed(prompt_index: int, k: int) -> int:
    """Labelling seeds: the same (prompt, k) gets the same starting noise every round, for before/after views."""
    return prompt_index * 1000 + k


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class JudgedReward:
    """The learned reward, with the hidden taste logged beside it (``judge/hidden``) so their gap shows per epoch."""

    def __init__(self, reward, taste: str | None):
        self.reward, self.taste, self.name = reward, taste, reward.name

    def __call__(self, images, prompts, metadata):
        rewards, info = self.reward(images, prompts, metadata)
        if self.taste is not None and not (metadata and metadata[0].get("x0")):  # not the baseline's predicted images
            info = info | {"judge/hidden": float(evaluate.TASTES[self.taste].score(list(images), prompts).mean())}
        return rewards, info


class Loop:
    """Drives the rounds stored in ``run_dir/labels.db``; ``config`` applies to rounds started from now on."""

    def __init__(self, run_dir: str | Path, config: RoundConfig):
        self.run_dir = Path(run_dir).absolute()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root = self.run_dir.parent
        self.store = Store(self.run_dir / "labels.db")
        self.config = config.validate()
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self._clip = None
        self._hpsv2: tuple[tuple[str, str], HPSv2] | None = None
        self._policy = None

    # ----------------------------------------------------------------- where things are
    def round_dir(self, round_id: int) -> Path:
        return self.run_dir / f"round-{round_id:03d}"

    def round_method(self, round_id: int) -> str:
        """The method round ``round_id`` trains with, as stored when it started."""
        return next(r for r in self.rounds() if r.id == round_id).config.get("method", "ddpo")

    def train_dir(self, round_id: int) -> Path:
        """Where round ``round_id``'s training runs: ``round-NNN/<method>``."""
        return self.round_dir(round_id) / self.round_method(round_id)

    def policy_checkpoint(self, round_id: int) -> Path | None:
        """The checkpoint that round ``round_id`` ended with (None for round 0, the base model)."""
        return latest_checkpoint(self.train_dir(round_id)) if round_id > 0 else None

    def rounds(self) -> list[Round]:
        return self.store.rounds()

    def current(self) -> Round | None:
        rounds = self.rounds()
        return rounds[-1] if rounds else None

    # ----------------------------------------------------------------- driving
    def step(self) -> Outcome:
        """Run the current round's phase (starting a new round after a finished one) and advance it."""
        fresh = False
        if self.state.is_main_process:
            current = self.current()
            if fresh := current is None or current.phase == "done":
                self.store.add_round(self.config.check_models().to_dict(), phase=PHASES[0])
        self.state.wait_for_everyone()
        current = self.current()
        cfg = self.stored_config(current)
        if not fresh and current.phase != "label":  # a missing model fails here, before the phase: still resumable
            cfg.check_models()
        outcome = Outcome(current.id, current.phase, "")
        if current.phase == "train" or self.state.is_main_process:  # training runs on every process, the rest on one
            message = getattr(self, f"_{current.phase}")(current.id, cfg)
            outcome = Outcome(current.id, current.phase, message or "", waiting=message is None)
        self.state.wait_for_everyone()
        if self.state.is_main_process and not outcome.waiting:
            crashpoint("phase")
            self.store.set_phase(current.id, PHASES[PHASES.index(current.phase) + 1])
        self.state.wait_for_everyone()
        return outcome

    def stored_config(self, record: Round) -> RoundConfig:
        """The config a round runs with: the one stored when it started, so a resume never mixes two settings."""
        try:
            return from_dict(record.config)
        except ConfigError as e:
            raise RoundError(f"round {record.id}'s stored settings cannot run ({e}); replace them, keeping its images and "
                             f"labels, with `python -m rlhf.round reconfigure --run-dir {self.run_dir} --set KEY=VALUE`") from None

    def run(self, rounds: int, wait: bool = False, poll_s: float = 10.0) -> list[Outcome]:
        """Step until ``rounds`` rounds are done; when people must label first, return (or poll, with ``wait``)."""
        outcomes = []
        while sum(r.phase == "done" for r in self.rounds()) < rounds:
            outcome = self.step()
            outcomes.append(outcome)
            if outcome.waiting:
                if not wait:
                    break
                time.sleep(poll_s)
        return outcomes

    # ----------------------------------------------------------------- models
    def clip(self, cfg: RoundConfig):
        if self._clip is None:
            self._clip = load_clip(cfg.clip, cfg.clip_pretrained, device=str(self.state.device))
        return self._clip

    def hpsv2(self, cfg: RoundConfig) -> HPSv2 | None:
        """HPSv2 when a checkpoint is configured, loaded once per checkpoint (ViT-H-14 has about 1B parameters)."""
        if not cfg.hpsv2_weights:
            return None
        key = (cfg.hpsv2_weights, cfg.hpsv2_arch)
        if self._hpsv2 is None or self._hpsv2[0] != key:
            self._hpsv2 = key, HPSv2(*key, device=str(self.state.device))
        return self._hpsv2[1]

    def embeddings(self, cfg: RoundConfig) -> EmbeddingCache:
        return EmbeddingCache(self.run_dir / "embeddings", self.clip(cfg))

    def reward_model(self, round_id: int, cfg: RoundConfig) -> RewardModel | None:
        folder = self.round_dir(round_id) / "reward_model"
        if not (folder / MODEL_FILE).is_file():
            return None
        return RewardModel.load(folder, self.clip(cfg), lam=cfg.uncertainty_penalty)

    def policy(self, round_id: int, cfg: RoundConfig):
        """The pipeline with the policy that round ``round_id`` ended with (the LoRA loaded into the UNet with
        diffusers' own loader, or the saved UNet of full fine-tuning); the last one is kept for the next call."""
        if self._policy is not None and self._policy[0] == round_id:
            return self._policy[1]
        self._policy = None  # free the previous pipeline before loading the next
        device = self.state.device
        dtype = precision_dtype(cfg.mixed_precision) if device.type == "cuda" else torch.float32
        pipe = load_policy(cfg.pipeline, self.policy_checkpoint(round_id), dtype=dtype, device=device)
        self._policy = (round_id, pipe)
        return pipe

    def draw(self, round_id: int, cfg: RoundConfig, prompts: list[str], seeds: list[int]) -> np.ndarray:
        ddpo = cfg.ddpo_config()
        pipe = self.policy(round_id, cfg)
        return evaluate.draw(pipe, pipe.unet, prompts, seeds, num_steps=ddpo.num_steps, eta=ddpo.eta,
                             guidance_scale=ddpo.guidance_scale)

    # ----------------------------------------------------------------- phases
    def _sample(self, round_id: int, cfg: RoundConfig) -> str:
        """Draw images_per_prompt images of every prompt with the previous round's policy; a d3po round keeps each
        image's trajectory beside it, written before the image is recorded."""
        from tqdm.auto import tqdm

        prompts = [p.text for p in load_prompts(cfg.prompts)]
        recorded = {(im.prompt, im.seed) for im in self.store.images(round_id)}
        jobs = [(i, p, image_seed(i, k)) for i, p in enumerate(prompts) for k in range(cfg.images_per_prompt)
                if (p, image_seed(i, k)) not in recorded]
        folder = self.run_dir / "images" / f"round-{round_id:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        model_id = "base" if round_id == 1 else f"round-{round_id - 1}"
        sampler, pipe = cfg.ddpo_config(), self.policy(round_id - 1, cfg)
        batch = 32
        for start in tqdm(range(0, len(jobs), batch), desc=f"round {round_id}: sampling", unit="batch"):
            chunk = jobs[start:start + batch]
            gens = [torch.Generator(pipe.vae.device).manual_seed(seed) for _, _, seed in chunk]
            traj = sample_trajectories(pipe, pipe.unet, [p for _, p, _ in chunk], num_steps=sampler.num_steps,
                                       eta=sampler.eta, guidance_scale=sampler.guidance_scale, generator=gens)
            for row, ((i, prompt, seed), image) in enumerate(zip(chunk, traj.images)):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                path = folder / f"p{i:04d}-s{seed}.png"
                if cfg.method == "d3po":
                    save_trajectory(trajectory_path(path), Trajectory(
                        traj.latents[row].float().cpu().numpy(), traj.log_probs[row].float().cpu().numpy(),
                        traj.timesteps.cpu().numpy(), sampler.eta, sampler.guidance_scale))
                write_atomic(path, buffer.getvalue())
                crashpoint("sample")
                self.store.add_image(path.relative_to(self.data_root), prompt, round_id, seed, model_id,
                                     hashlib.sha256(buffer.getvalue()).hexdigest())
        return f"{len(jobs)} images drawn ({len(recorded)} were already there) with the {model_id} policy"

    def _queue(self, round_id: int, cfg: RoundConfig) -> str:
        """Queue audit, random and (from round 2) actively chosen pairs; re-running queues the same pairs."""
        from reward_models.active import select_pairs

        images = self.store.images(round_id)
        prompts = [im.prompt for im in images]
        model = self.reward_model(round_id - 1, cfg)
        features = None
        if model is not None:
            cache = self.embeddings(cfg)
            pixels = [load_image(self.data_root, im.path) for im in images]
            features = model.spec(cache.images(pixels), cache.texts(prompts))
        try:
            picks = select_pairs(prompts, features, model.ensemble if model else None, cfg.pairs_per_round,
                                 random_share=cfg.random_share, n_audit=cfg.audit_pairs, seed=cfg.seed * 1000 + round_id)
        except ValueError as e:
            raise RoundError(f"round {round_id}: cannot queue {cfg.pairs_per_round} pairs ({e}); lower pairs_per_round "
                             "or raise images_per_prompt") from None
        counts = {}
        for selection in ("audit", "random", "active"):
            chosen = [(images[i].id, images[j].id) for i, j, s in picks if s == selection]
            counts[selection] = len(self.store.queue_pairs(chosen, selection, round_id))
            crashpoint("queue")
        return ", ".join(f"{n} {s}" for s, n in counts.items()) + " pairs queued"

    def _label(self, round_id: int, cfg: RoundConfig) -> str | None:
        """Synthetic: answer every pair now. Human: done once every pair has a label; else None (waiting)."""
        labeller = parse_labeller(cfg.labeller)
        if labeller is not None:
            n = label_round(self.store, round_id, labeller, self.data_root)
            return f"{n} pairs labelled by {labeller.name}"
        labelled, queued = label_coverage(self.store, round_id)
        if labelled < queued:
            print(f"round {round_id}: {labelled}/{queued} pairs labelled; waiting for people to label in the app "
                  f"(RLHF_DB={self.store.path} streamlit run app/label.py)")
            return None
        return f"all {queued} pairs labelled"

    def _preference_arrays(self, preferences):
        """Images a, b (a = lower image id, so targets are not all 1), prompts and P(a preferred)."""
        a, b, prompts, choices = [], [], [], []
        for p in preferences:
            winner_first = p.winner_image < p.loser_image
            first, second = (p.winner_path, p.loser_path) if winner_first else (p.loser_path, p.winner_path)
            a.append(load_image(self.data_root, first))
            b.append(load_image(self.data_root, second))
            prompts.append(p.prompt)
            choices.append("tie" if p.tie else ("left" if winner_first else "right"))
        return a, b, prompts, choice_targets(choices)

    @staticmethod
    def _learning_curve(cache, spec, a, b, prompts, targets, config: RewardModelConfig) -> list[dict]:
        """Grouped-CV accuracy of one head on a quarter, half, three quarters and all of the labels: whether more
        labels are still worth collecting."""
        text = cache.texts(prompts)
        fa, fb = spec(cache.images(a), text), spec(cache.images(b), text)
        folds = min(config.n_splits, len(set(prompts)))
        n_train = len(targets) * (folds - 1) // folds
        sizes = sorted({max(MIN_LABELS, n_train * k // 4) for k in (1, 2, 3, 4)})
        one_head = replace(config, k=1)
        curve = learning_curve(fa, fb, targets, prompts, lambda x, y, t: fit_ensemble(x, y, t, one_head).mean, sizes,
                               n_splits=folds)
        return [{"labels": point["labels"], "accuracy": point["accuracy"]} for point in curve]

    def _reward(self, round_id: int, cfg: RoundConfig) -> str:
        """Fit the reward model on every round's labels except the audit pairs, which test it."""
        out = self.round_dir(round_id) / "reward_model"
        if (out / MODEL_FILE).is_file():
            return f"reward model already at {out}"
        audit = {p.id for p in self.store.pairs() if p.selection == "audit"}
        preferences = [p for p in self.store.preferences() if p.round_id <= round_id]
        train = [p for p in preferences if p.pair_id not in audit]
        held = [p for p in preferences if p.pair_id in audit]
        if len(train) < MIN_LABELS:
            raise RoundError(f"round {round_id}: only {len(train)} usable labels (skips and 'both bad' do not count), "
                             f"at least {MIN_LABELS} are needed; label more pairs in the app, then run again")
        cache = self.embeddings(cfg)
        a, b, prompts, targets = self._preference_arrays(train)
        config = RewardModelConfig(k=cfg.ensemble_size, lam=cfg.uncertainty_penalty, seed=cfg.seed)
        model, held_out = train_reward_model(cache, a, b, prompts, targets, config)
        model.card["learning_curve"] = self._learning_curve(cache, model.spec, a, b, prompts, targets, config)
        if held:
            ha, hb, hp, ht = self._preference_arrays(held)
            text = cache.texts(hp)
            scores_a, scores_b = (model.ensemble.mean(model.spec(cache.images(x), text)) for x in (ha, hb))
            model.card["audit"] = pair_metrics(scores_a, scores_b, ht)
        tmp = out.with_name(".tmp-reward_model")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        if held:
            reliability_diagram(scores_a - scores_b, ht, tmp / "reliability.png")
        crashpoint("reward")
        os.replace(tmp, out)
        audit_acc = model.card.get("audit", {}).get("accuracy")
        return (f"reward model on {len(train)} labels: held-out accuracy {held_out['accuracy']:.3f}"
                + (f", audit accuracy {audit_acc:.3f} on {len(held)} pairs" if audit_acc is not None else ""))

    def _train(self, round_id: int, cfg: RoundConfig) -> str:
        """Fine-tune the previous policy by the round's method; resumes from the method's last checkpoint."""
        return self._ddpo(round_id, cfg) if cfg.method == "ddpo" else self._direct(round_id, cfg)

    def direct_pairs(self, round_id: int, cfg: RoundConfig) -> list[PreferencePair]:
        """The labelled pairs a direct method trains on: those with a winner, less the audit pairs (as for the reward
        model); Diffusion-DPO takes every round's so far, D3PO this round's own (sampled by its reference)."""
        audit = {p.id for p in self.store.pairs() if p.selection == "audit"}
        rounds = {round_id} if cfg.method == "d3po" else set(range(1, round_id + 1))
        return [PreferencePair(p.prompt, self.data_root / p.winner_path, self.data_root / p.loser_path)
                for p in self.store.preferences() if p.round_id in rounds and not p.tie and p.pair_id not in audit]

    def _direct(self, round_id: int, cfg: RoundConfig) -> str:
        direct = cfg.direct_config(round_id)
        if direct.save_every == 0:
            direct = direct.replace(save_every=max(1, direct.max_train_steps // 4))  # a crash costs at most a quarter
        pairs = self.direct_pairs(round_id, cfg)
        if not pairs:
            raise RoundError(f"round {round_id}: no labelled pair with a winner (outside the audit pairs) to train "
                             f"{cfg.method} on; label pairs left or right in the app, then run again")
        if cfg.method == "d3po":
            try:
                pairs = require_trajectories(pairs)
            except ValueError as e:
                raise RoundError(f"round {round_id}: {e}") from None
        run = self.train_dir(round_id)
        trainer_class = D3POTrainer if cfg.method == "d3po" else DiffusionDPOTrainer
        trainer = trainer_class(load_pipeline(cfg.pipeline, device=self.state.device), direct, run)
        resume, previous = latest_checkpoint(run), self.policy_checkpoint(round_id - 1)
        if resume is not None:
            trainer.load_checkpoint(resume)
        elif previous is not None:
            trainer.load_policy(previous)
        history = trainer.train(pairs, direct.max_train_steps - trainer.step)
        if trainer.saved_step != trainer.step:
            trainer.save_checkpoint()
        last = f", last step's implicit accuracy {history[-1]['dpo/implicit_acc']:.2f}" if history else ""
        return (f"{cfg.method} {direct.max_train_steps} steps on {len(pairs)} pairs{last}"
                + (f" (resumed at step {int(resume.name[5:])})" if resume else ""))

    def _ddpo(self, round_id: int, cfg: RoundConfig) -> str:
        """Fine-tune the previous policy against this round's reward model."""
        ddpo = cfg.ddpo_config(round_id)
        if ddpo.save_every == 0:
            ddpo = ddpo.replace(save_every=max(1, ddpo.num_epochs // 4))  # a crash costs at most a quarter
        labeller = parse_labeller(cfg.labeller)
        reward = JudgedReward(self.reward_model(round_id, cfg), labeller.persona.taste if labeller else None)
        pipe = load_pipeline(cfg.pipeline, device=self.state.device)
        run = self.train_dir(round_id)
        trainer = DDPOTrainer(pipe, reward, ddpo, run)
        resume, previous = latest_checkpoint(run), self.policy_checkpoint(round_id - 1)
        if resume is not None:
            trainer.load_checkpoint(resume)
        elif previous is not None:
            trainer.load_policy(previous)
        trainer.train(ddpo.num_epochs - trainer.epoch)
        if trainer.saved_epoch != trainer.epoch:
            trainer.save_checkpoint()
        return f"DDPO {ddpo.num_epochs} epochs" + (f" (resumed at epoch {resume.name[6:]})" if resume else "")

    def _eval(self, round_id: int, cfg: RoundConfig) -> str:
        result = self.evaluate(round_id, cfg)
        report.write(self)
        policy = result["policy"]["train_prompts"]
        hidden = f", hidden score {policy['hidden_score']:.4f}" if "hidden_score" in policy else ""
        return f"learned reward {policy['learned_reward']:+.3f}{hidden}; report at {self.run_dir / 'report.md'}"

    # ----------------------------------------------------------------- evaluation
    def eval_sets(self, cfg: RoundConfig) -> list[evaluate.EvalSet]:
        eval_prompts = [p.text for p in load_prompts(cfg.eval_prompts)]
        return [evaluate.EvalSet("train_prompts", [p.text for p in load_prompts(cfg.prompts)], cfg.eval_seeds),
                evaluate.EvalSet("eval_prompts", eval_prompts[:cfg.eval_prompt_count or None], cfg.eval_prompt_seeds)]

    def eval_images(self, round_id: int, cfg: RoundConfig, eval_set: evaluate.EvalSet) -> np.ndarray:
        """Images of round ``round_id``'s policy (0: base) on an eval set, drawn once and kept as .npy."""
        folder = self.run_dir / "eval" if round_id == 0 else self.round_dir(round_id)
        path = folder / f"{'base-' if round_id == 0 else 'eval-'}{eval_set.name}.npy"
        prompts, seeds = eval_set.jobs()
        if path.is_file():
            images = np.load(path)
            if len(images) == len(prompts):
                return images  # else drawn for other eval settings (a config changed between rounds): redraw
        images = self.draw(round_id, cfg, prompts, seeds)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, images)
        write_atomic(path, buffer.getvalue())
        crashpoint("eval")
        return images

    def evaluate(self, round_id: int, cfg: RoundConfig) -> dict:
        """Base and round ``round_id``'s policy on the eval sets, judged by this round's reward model, CLIP score,
        the aesthetic head and HPSv2 (when configured) and (synthetic labeller) the hidden taste;
        written to ``round-NNN/eval.json``."""
        labeller = parse_labeller(cfg.labeller)
        scorers = {"clip_score": ClipScore(self.clip(cfg))}
        if cfg.aesthetic_weights:
            scorers["aesthetic"] = Aesthetic(self.clip(cfg), cfg.aesthetic_weights)
        if hps := self.hpsv2(cfg):
            scorers["hpsv2"] = hps
        judges = {"reward_model": self.reward_model(round_id, cfg), "scorers": scorers,
                  "taste": labeller.persona.taste if labeller else None}
        result = {"round": round_id, "policy_checkpoint": str(self.policy_checkpoint(round_id)), "base": {}, "policy": {}}
        for eval_set in self.eval_sets(cfg):
            prompts = eval_set.jobs()[0]
            for name, rid in (("base", 0), ("policy", round_id)):
                result[name][eval_set.name] = evaluate.metrics(self.eval_images(rid, cfg, eval_set), prompts, **judges)
        write_atomic(self.round_dir(round_id) / "eval.json", json.dumps(result, indent=2).encode())
        return result
