"""The DDPO loop (Black et al. 2023, Algorithm 1 with per-prompt advantages): sample -> score ->
advantages -> clipped policy-gradient update, with LoRA or full fine-tuning, accelerate and atomic checkpoints.

Runs unchanged on the toy pipeline and on SD 1.5; ``accelerate launch -m rlhf.ddpo`` spreads sampling and
training over processes, and per-prompt statistics are gathered across them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from rlhf.ddpo.advantages import PerPromptStatTracker, StateBaselineFit, clip_advantages, state_baseline
from rlhf.ddpo.config import DDPOConfig
from rlhf.adapters import PipelineAdapter
from rlhf.ddpo.logprob import gaussian_kl
from rlhf.ddpo.loss import policy_loss, score_function_loss
from rlhf.ddpo.rewards import Reward, check_finite
from rlhf.ddpo.sampling import Trajectories, sample_trajectories
from rlhf.faults import crashpoint
from rlhf.grid import image_grid
from rlhf.lora import (CheckpointError, atomic_folder, base_fingerprint, load_trained,
                       make_accelerator, prepare_policy, reference_model, save_policy, trainable_state)
from rlhf.models import precision_dtype


class DDPOTrainer:
    def __init__(self, pipe, reward: Reward, cfg: DDPOConfig, run_dir: Path | str, accelerator: Accelerator | None = None):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        if accelerator is None:  # scalars and grids go to tensorboard under run_dir/tensorboard
            accelerator = make_accelerator(self.run_dir, cfg.mixed_precision, dataclasses.asdict(cfg))
        self.accelerator = accelerator
        self.reward = reward
        self.pipe = pipe.to(self.accelerator.device)
        set_seed(cfg.seed, device_specific=True)
        self.rng = np.random.default_rng(cfg.seed + self.accelerator.process_index)
        self.generator = torch.Generator(self.accelerator.device).manual_seed(cfg.seed + self.accelerator.process_index)
        self.prompt_queue: list[int] = []  # the rest of the current pass over the prompts (balanced_prompts)
        self._prepare_models()
        self.stats = PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)
        self.baseline_fit = StateBaselineFit(cfg.x0_baseline_history) if cfg.x0_baseline_history else None
        self.adapter = PipelineAdapter(self.pipe)
        self.scheduler = self.adapter.scheduler(cfg.num_steps)
        self.policy_steps = self.adapter.policy_steps(cfg.num_steps)  # actions per trajectory: T, or T - 1 for LCM
        self.epoch = 0
        self.saved_epoch: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1)

    # ----------------------------------------------------------------- set-up
    def _prepare_models(self) -> None:
        cfg, pipe = self.cfg, self.pipe
        self.params, self.ref_unet = prepare_policy(pipe, precision_dtype(self.accelerator.mixed_precision), cfg.use_lora,
                                                    cfg.lora_rank, cfg.lora_targets, frozen_copy=cfg.kl_coef > 0)
        self.base = base_fingerprint(pipe.unet)
        optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=cfg.adam_betas,
                                      weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        self.unet, self.optimizer = self.accelerator.prepare(pipe.unet, optimizer)

    # ----------------------------------------------------------------- phases
    def _batch_prompts(self) -> list[str]:
        prompts, k = self.cfg.prompts, self.cfg.samples_per_prompt
        n = self.cfg.sample_batch_size // k
        if not self.cfg.balanced_prompts:
            return [prompts[i] for i in self.rng.choice(len(prompts), size=n) for _ in range(k)]
        while len(self.prompt_queue) < n:
            self.prompt_queue += self.rng.permutation(len(prompts)).tolist()
        chosen, self.prompt_queue = self.prompt_queue[:n], self.prompt_queue[n:]
        return [prompts[i] for i in chosen for _ in range(k)]

    def sample(self) -> tuple[Trajectories, np.ndarray, np.ndarray | None, dict]:
        """Sample the epoch's trajectories and score them (rewards (N,), and with ``x0_baseline`` the rewards of
        every stochastic step's predicted x_0 (N, P)); each batch is scored in a worker thread while the next one samples."""
        cfg = self.cfg
        self.unet.eval()
        batches, futures, x0_futures, x0_prompts = [], [], [], []
        for _ in range(cfg.num_batches_per_epoch):
            prompts = self._batch_prompts()
            traj = sample_trajectories(self.pipe, self.unet, prompts, num_steps=cfg.num_steps, eta=cfg.eta,
                                       guidance_scale=cfg.guidance_scale, generator=self.generator, decode_x0=cfg.x0_baseline)
            futures.append(self._executor.submit(self.reward, traj.images, prompts, [{"epoch": self.epoch}] * len(prompts)))
            if cfg.x0_baseline:
                step_prompts = [p for p in prompts for _ in range(self.policy_steps)]  # (B * P,), sample-major
                x0_prompts += step_prompts
                x0_futures.append(self._executor.submit(self.reward, traj.x0_images.reshape(-1, *traj.images.shape[1:]),
                                                        step_prompts, [{"epoch": self.epoch, "x0": True}] * len(step_prompts)))
                traj.x0_images = None  # scored in the worker; training needs only the latents
            batches.append(traj)
        traj = Trajectories.cat(batches)
        results = [f.result() for f in futures]
        rewards = check_finite(np.concatenate([r for r, _ in results]).astype(np.float64), traj.prompts, self.reward.name)
        values = None
        if x0_futures:
            values = np.concatenate([np.asarray(f.result()[0], np.float64) for f in x0_futures])  # (N * P,)
            values = check_finite(values, x0_prompts, self.reward.name)
            values = values.reshape(len(traj), self.policy_steps)  # (N, P)
        return traj, rewards, values, {k: v for _, info in results for k, v in info.items()}

    def advantages(self, prompts: list[str], rewards: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Rewards normalised per prompt (kvablack/ddpo-pytorch's stat tracker), less the state baseline when
        ``values`` (N, P) are given, with statistics from every process; one advantage per sample and stochastic step (N, P)."""
        acc = self.accelerator
        index = torch.tensor([self.cfg.prompts.index(p) for p in prompts], device=acc.device)
        all_rewards = acc.gather(torch.as_tensor(rewards, device=acc.device)).cpu().numpy()
        all_prompts = [self.cfg.prompts[i] for i in acc.gather(index).cpu().tolist()]
        info = {"reward/mean": float(all_rewards.mean()), "reward/std": float(all_rewards.std()), "reward/count": len(all_rewards)}
        baseline = None
        if values is not None:
            all_values = acc.gather(torch.as_tensor(values, device=acc.device)).cpu().numpy()  # (N, P)
            groups = all_prompts if self.cfg.per_prompt_stat_tracking else [0] * len(all_prompts)
            baseline, removed = (self.baseline_fit or state_baseline)(all_rewards, all_values, groups)
            info["baseline/variance_removed"] = float(removed.mean())
        if self.cfg.per_prompt_stat_tracking:
            adv = self.stats.update(all_prompts, all_rewards, baseline)
        else:
            centred = all_rewards - all_rewards.mean()
            adv = (centred if baseline is None else centred[:, None] - baseline) / (all_rewards.std() + 1e-6)
        adv = adv if baseline is not None else np.repeat(adv[:, None], self.policy_steps, axis=1)  # (N, P)
        mine = adv.reshape(acc.num_processes, -1, self.policy_steps)[acc.process_index]
        return clip_advantages(mine, self.cfg.adv_clip_max), info

    def _chunk_loss(self, traj: Trajectories, adv: torch.Tensor, tidx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Policy loss of ``traj`` with advantages ``adv`` (b, T) at its own timestep indices ``tidx`` (b, k),
        stacked into one forward."""
        b, k = tidx.shape
        rows = torch.arange(b)[:, None]
        x = traj.latents[rows, tidx].flatten(0, 1)  # (b*k, C, h, w)
        x_next = traj.latents[rows, tidx + 1].flatten(0, 1)  # (b*k, C, h, w)
        t = traj.timesteps[tidx].flatten().to(x.device)  # (b*k,)
        cond = traj.cond.repeat_interleave(k)  # (b*k, ...)
        old_log_prob = traj.log_probs[rows, tidx].flatten()  # (b*k,)
        a = adv[rows, tidx].flatten()  # (b*k,)
        with self.accelerator.autocast():
            out = self.adapter.predict(self.unet, x, t, cond, self.cfg.guidance_scale)
        step = self.adapter.step(self.scheduler, out, t, x, self.cfg.eta, prev_sample=x_next)
        if self.cfg.loss == "is":
            loss, info = policy_loss(step.log_prob, old_log_prob, a, self.cfg.clip_range)
            info = {f"ppo/{k_}": float(v) for k_, v in info.items()}
        else:
            loss, info = score_function_loss(step.log_prob, a), {}
        if self.cfg.kl_coef > 0:
            reference = reference_model(self.accelerator.unwrap_model(self.unet), self.ref_unet)
            with torch.no_grad(), reference as ref, self.accelerator.autocast():
                ref_step = self.adapter.step(self.scheduler, self.adapter.predict(ref, x, t, cond, self.cfg.guidance_scale),
                                             t, x, self.cfg.eta, prev_sample=x_next)
            kl = gaussian_kl(step.mean, ref_step.mean, step.std).mean()
            loss = loss + self.cfg.kl_coef * kl
            info["kl/to_base"] = float(kl.detach())
        return loss, info | {"loss/policy": float(loss.detach())}

    def update(self, traj: Trajectories, advantages: np.ndarray) -> dict:
        """Inner epochs over the samples: each sample trains on its own shuffled ``timestep_fraction`` of
        steps; gradients accumulate over those timesteps and ``gradient_accumulation_steps`` micro-batches.
        ``advantages`` are one per sample and stochastic step (N, P), as `advantages` returns them."""
        cfg, acc = self.cfg, self.accelerator
        n, steps = len(traj), traj.log_probs.shape[1]
        n_train = max(1, int(steps * cfg.timestep_fraction))
        adv = torch.as_tensor(advantages, dtype=torch.float32, device=acc.device)  # (N, P)
        per_forward = cfg.timesteps_per_forward or n_train
        chunks = [range(j, min(j + per_forward, n_train)) for j in range(0, n_train, per_forward)]  # same every micro-batch
        self.unet.train()
        logs: dict[str, list[float]] = {}
        for _ in range(cfg.num_inner_epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.rng.integers(2**31))))
            tperm = torch.stack([torch.from_numpy(self.rng.permutation(steps)) for _ in range(n)])[:, :n_train]  # (n, n_train)
            starts = list(range(0, n, cfg.train_batch_size))
            for m, start in enumerate(starts):
                idx = order[start : start + cfg.train_batch_size]
                micro = traj.select(idx)
                last_micro = (m + 1) % cfg.gradient_accumulation_steps == 0 or m == len(starts) - 1
                for c, js in enumerate(chunks):
                    syncing = last_micro and c == len(chunks) - 1
                    with contextlib.nullcontext() if syncing else acc.no_sync(self.unet):
                        loss, info = self._chunk_loss(micro, adv[idx.to(adv.device)], tperm[idx][:, list(js)])
                        acc.backward(loss * len(js) / n_train / cfg.gradient_accumulation_steps)
                    for k_, v in info.items():
                        logs.setdefault(k_, []).append(v)
                if last_micro:
                    logs.setdefault("train/grad_norm", []).append(float(acc.clip_grad_norm_(self.params, cfg.max_grad_norm)))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        return {k: float(np.mean(v)) for k, v in logs.items()}

    def train_epoch(self) -> dict:
        """One epoch as named phases: sample, score, advantages, update; then log and maybe checkpoint."""
        t0 = time.perf_counter()
        traj, rewards, values, reward_info = self.sample()
        t1 = time.perf_counter()
        adv, adv_info = self.advantages(traj.prompts, rewards, values)
        metrics = self.update(traj, adv)
        crashpoint("ddpo_epoch")
        self.epoch += 1
        metrics |= adv_info | reward_info | {"epoch": self.epoch, "time/sample_s": t1 - t0, "time/epoch_s": time.perf_counter() - t0}
        self._log(metrics, traj)
        if self.cfg.save_every and self.epoch % self.cfg.save_every == 0:
            self.save_checkpoint()
        return metrics

    def train(self, epochs: int | None = None, progress: bool = True) -> list[dict]:
        from tqdm.auto import tqdm

        history = []
        target = epochs if epochs is not None else self.cfg.num_epochs - self.epoch
        with tqdm(range(target), desc="ddpo", disable=not (progress and self.accelerator.is_main_process)) as bar:
            for _ in bar:
                history.append(self.train_epoch())
                bar.set_postfix(reward=f"{history[-1]['reward/mean']:.3f}")
        return history

    def evaluate(self, prompts: list[str], samples_per_prompt: int = 4, seed: int = 10_000) -> float:
        """Mean reward of the current policy on fixed held-out noise (``seed`` is never used for training)."""
        self.unet.eval()
        batch = [p for p in prompts for _ in range(samples_per_prompt)]
        traj = sample_trajectories(self.pipe, self.unet, batch, num_steps=self.cfg.num_steps, eta=self.cfg.eta,
                                   guidance_scale=self.cfg.guidance_scale, generator=torch.Generator().manual_seed(seed))
        rewards, _ = self.reward(traj.images, batch, [{"eval": True}] * len(batch))
        return float(np.mean(check_finite(np.asarray(rewards, np.float64), batch, self.reward.name)))

    # ----------------------------------------------------------------- logging and checkpoints
    def _log(self, metrics: dict, traj: Trajectories) -> None:
        """metrics.jsonl, a grid PNG per epoch, and the same to the accelerator's trackers (tensorboard)."""
        self.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=self.epoch)
        if not self.accelerator.is_main_process:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        grids = self.run_dir / "grids"
        grids.mkdir(exist_ok=True)
        grid = image_grid(list(traj.images[:16]), traj.prompts[:16], cols=8)
        grid.save(grids / f"epoch-{self.epoch:04d}.png")
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": np.asarray(grid)[None]}, step=self.epoch, dataformats="NHWC")
                tracker.writer.flush()

    def _rng_state(self) -> dict:
        return {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                "python": random.getstate(), "prompt_queue": list(self.prompt_queue)}

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/epoch-NNNN`` atomically: everything goes to a temporary folder that is renamed
        into place only when complete, so a crash never leaves a half-written checkpoint."""
        acc = self.accelerator
        acc.wait_for_everyone()
        self.saved_epoch = self.epoch  # on every process, so all agree whether a final save is due
        if not acc.is_main_process:
            return None
        final = self.run_dir / "checkpoints" / f"epoch-{self.epoch:04d}"
        unet = acc.unwrap_model(self.unet)
        with atomic_folder(final) as tmp:
            save_policy(unet, tmp, self.cfg.use_lora)
            torch.save({
                "epoch": self.epoch, "base": self.base, "config": dataclasses.asdict(self.cfg),
                "trainable": trainable_state(unet), "optimizer": self.optimizer.state_dict(),
                "stats": self.stats.state_dict(), "rng": self._rng_state(),
                "baseline_fit": self.baseline_fit.state_dict() if self.baseline_fit else None,
            }, tmp / "trainer_state.pt")
        return final

    def load_policy(self, path: Path | str) -> dict:
        """Start from a checkpoint's trained weights only (a new round's fresh optimizer and statistics);
        returns the checkpoint's full state."""
        return load_trained(self.accelerator.unwrap_model(self.unet), path, self.base)

    def load_checkpoint(self, path: Path | str) -> None:
        """Restore model, optimizer, stat tracker, RNG and epoch exactly as saved."""
        state = self.load_policy(path)
        if "method" in state:
            raise CheckpointError(f"{path} is a {state['method']} checkpoint, not DDPO; resume it with its own method or "
                                  "start a new run folder")
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats.load_state_dict(state["stats"])
        if self.baseline_fit:
            if state.get("baseline_fit") is None:
                raise CheckpointError(f"checkpoint {path} was trained without x0_baseline_history; resume with the settings "
                                      "it was trained with")
            self.baseline_fit.load_state_dict(state["baseline_fit"])
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        random.setstate(rng["python"])
        self.prompt_queue = list(rng["prompt_queue"])
        self.epoch = self.saved_epoch = state["epoch"]
