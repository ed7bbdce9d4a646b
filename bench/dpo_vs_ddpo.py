"""Diffusion-DPO against DDPO on the shipped toy pipeline (data/models/toy-sd), CPU, fp32.

``methods``: DDPO against the reward model, Diffusion-DPO and D3PO, each driving ``--rounds`` toy rounds
(``python -m rlhf.round``'s ``toy`` preset: 128 images and 400 queued pairs per round, labeller
``synthetic:striped``) from the same base, for ``--seeds`` runs each (seed s sets the round, DDPO and DPO seeds).
Every method gets the same label budget per round; the labels themselves differ from round 2 on, since each
method's policy draws its own images. Per method: the hidden score on the training prompts' held-out seeds per
round (base first, mean over runs), its paired change over the base with the standard error over all runs'
images, prompt following on the eval prompts, the learned reward's gain minus the hidden score's gain, and wall
minutes per round on 2 cores.

``step``: the cost of one Diffusion-DPO optimizer step of ``rlhf.dpo.trainer.DiffusionDPOTrainer`` (toy preset:
8 pairs a step, LoRA r4, lr 1e-3, beta 5000, fp32; checkpoints off) on a fixed batch of pairs drawn by the toy
pipeline itself (8 toy training prompts, two seeds each, stochastic DDIM 10 steps, CFG 5), timed around
``trainer.train(pairs, steps=1)``, against two others:

* ``bare``: the work that step needs and nothing else, on a separately loaded pipeline with the same LoRA and AdamW:
  VAE encode of the 2B images (pixels decoded beforehand), the text encoder on tokens made beforehand, one policy
  UNet forward + backward on winners and losers stacked (2B), one reference forward (no grad, LoRA off) on the same
  2B, the loss and the AdamW step. Image decoding, tokenising, gradient clipping and logging are the trainer's
  extra work. ``dpo_step_vs_bare`` = median ours / median bare.
* ``diffusers``: the same step of diffusers' own ``train_diffusion_dpo.py`` (shared/peers/diffusers, Apache-2.0,
  run unmodified from there by ``runpy`` in bench/.venv-dpo, the project venv plus ``datasets``, made by
  bench/dpo_peer_env.sh), on the same pairs exported as a Pick-a-Pic parquet (``jpg_0``, ``jpg_1`` PNG bytes,
  ``label_0``, ``caption``) that it reads with ``load_dataset(folder)``, at identical settings: resolution 32,
  batch 8 pairs, rank 4, lr 1e-3, ``--beta_dpo 2500`` (= beta / 2), weight decay 1e-2, grad clip 1, constant lr,
  ``--mixed_precision no``, ``--no_hflip`` (ours does not flip), ``--vae_encode_batch_size 16`` (all 2B images in
  one VAE call, as ours). Its dataset holds the 8 pairs repeated, so one epoch spans every step of the run.
  ``dpo_step_vs_diffusers`` = median ours / median diffusers.

Its step time comes from its own progress bar rather than from differencing runs of N and 2N steps, which would
subtract two contended start-ups: the harness replaces ``tqdm.auto.tqdm`` before the script imports it with a
subclass that, for the "Steps" bar, stops the clock at each ``update(1)`` (once per optimizer step) and starts it
again when the next step may begin. So start-up (imports, models, dataset) and the final LoRA save fall outside,
and each interval is one whole step, with its data loading and logging, as ours is. Besides that the harness only
puts a stand-in ``wandb`` module in place (the script imports wandb at its top and uses it only with
``--report_to wandb`` or validation, both off here) and sets the same thread count as ours.

The three sides run side by side in one run, each in its own process (so each peak RSS,
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, is its own), in lock step: the parent passes a baton so that one
process computes at a time, one step each per cycle, the order rotating every cycle; contention from other jobs on
the machine then falls on all three alike. After ``--warmup`` untimed cycles, ``--repeats`` timed ones; the spread
is the quartiles of each side's steps and of the per-cycle ratios. Every worker runs with one torch thread and
nice 10, as bench/ddpo_vs_trl.py's do.

    bash bench/dpo_peer_env.sh                                     # once: bench/.venv-dpo with datasets
    HF_HUB_OFFLINE=1 .venv/bin/python bench/dpo_vs_ddpo.py step    # about 3 min on 2 cores

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dpo_vs_ddpo.py methods # about 40 min on 2 cores

Writes (merges into) bench/results/dpo_vs_ddpo.json: ``dpo_step_vs_bare``, ``dpo_step_vs_diffusers`` and ``step``;
``methods`` and ``methods_setup``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "data" / "models" / "toy-sd"
PROMPTS = ROOT / "data" / "prompts" / "toy_train.txt"
PEER_SCRIPT = ROOT.parent / "shared" / "peers" / "diffusers" / "train_diffusion_dpo.py"
PEER_PYTHON = ROOT / "bench" / ".venv-dpo" / "bin" / "python"
OUT = ROOT / "bench" / "results" / "dpo_vs_ddpo.json"
RESULT_MARK = "@@RESULT@@"
THREADS = 1
STACK = "torch,diffusers,transformers,peft,accelerate"
PAIRS_SEED = 1000  # winners are drawn with seeds PAIRS_SEED + k, losers with PAIRS_SEED + 100 + k
DRAW = dict(num_steps=10, eta=1.0, guidance_scale=5.0)
SIDES = ("ours", "bare", "diffusers")


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # ru_maxrss is KiB on Linux


def quiet_worker() -> None:
    import torch

    os.nice(10)
    torch.set_num_threads(THREADS)


def spread(values: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": round(median, 5), "q1": round(q1, 5), "q3": round(q3, 5), "min": round(min(values), 5),
            "max": round(max(values), 5), "n": len(values)}


# --------------------------------------------------------------------------- the shared batch of pairs
def toy_config():
    from rlhf.dpo.config import PRESETS

    return PRESETS["toy"].replace(save_every=0)


def write_pairs(folder: Path, copies: int) -> dict:
    """The fixed batch (toy preset size) drawn by the toy pipeline, as Pick-a-Pic rows: ``pairs.parquet`` (the batch
    once, for ours) and ``pickapic/train.parquet`` (the batch ``copies`` times, for diffusers' script). Sides and
    labels alternate, so both readers have to put the winner first themselves."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from rlhf.evaluate.images import draw
    from rlhf.models import load_pipeline
    from rlhf.prompts import load_prompts

    b = toy_config().train_batch_size
    prompts = [p.text for p in load_prompts(PROMPTS)][:b]
    pipe = load_pipeline(PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    images = draw(pipe, pipe.unet, prompts * 2, [PAIRS_SEED + k for k in range(b)] + [PAIRS_SEED + 100 + k for k in range(b)],
                  **DRAW)  # (2B, H, W, 3): winners, then losers

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    rows = []
    for k, prompt in enumerate(prompts):
        win, lose = png(images[k]), png(images[b + k])
        first = k % 2 == 0  # winner as jpg_0 in even rows, as jpg_1 in odd ones
        rows.append({"caption": prompt, "jpg_0": win if first else lose, "jpg_1": lose if first else win,
                     "label_0": 1.0 if first else 0.0, "label_1": 0.0 if first else 1.0})
    (folder / "pickapic").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "pairs.parquet")
    pq.write_table(pa.Table.from_pylist(rows * copies), folder / "pickapic" / "train.parquet")
    return {"pairs": b, "resolution": int(images.shape[1]), "prompts": prompts}


# --------------------------------------------------------------------------- workers
class Baton:
    """A worker's side of the lock step: ``pass_()`` tells the parent this worker is idle and waits for its turn."""

    def __init__(self, job: dict):
        self.go, self.idle = job["go_fd"], job["idle_fd"]

    def pass_(self) -> None:
        os.write(self.idle, b".")
        if os.read(self.go, 1) != b"g":
            raise RuntimeError("the benchmark's parent went away")


def timed_steps(job: dict, step) -> list[float]:
    baton, times = Baton(job), []
    baton.pass_()
    for _ in range(job["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        baton.pass_()
    return times


def ours_worker(job: dict) -> dict:
    quiet_worker()
    from rlhf.dpo.data import read_pairs
    from rlhf.dpo.trainer import DiffusionDPOTrainer
    from rlhf.models import load_pipeline

    pairs, _ = read_pairs(Path(job["data"]) / "pairs.parquet")
    trainer = DiffusionDPOTrainer(load_pipeline(PIPELINE), toy_config(), Path(job["data"]) / "run-ours")
    return {"step_s": timed_steps(job, lambda: trainer.train(pairs, steps=1, progress=False)), "peak_rss_mib": peak_rss_mib()}


def bare_worker(job: dict) -> dict:
    quiet_worker()
    from rlhf.dpo.data import read_pairs

    pairs, _ = read_pairs(Path(job["data"]) / "pairs.parquet")
    parts = bare_parts(pairs, toy_config())
    return {"step_s": timed_steps(job, lambda: bare_step(parts)), "peak_rss_mib": peak_rss_mib()}


def bare_step(parts: dict) -> None:
    """The step's compute alone, on inputs already decoded and tokenised."""
    import torch
    import torch.nn.functional as F

    unet, vae, sched = parts["unet"], parts["vae"], parts["scheduler"]
    b = len(parts["ids"])
    with torch.no_grad():
        z = vae.encode(parts["pixels"]).latent_dist.sample() * vae.config.scaling_factor  # (2B, C, h, w)
        embeds = parts["text_encoder"](parts["ids"])[0].repeat(2, 1, 1)  # (2B, L, D)
    noise = torch.randn_like(z[:b]).repeat(2, 1, 1, 1)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,)).repeat(2)
    noisy = sched.add_noise(z, noise, t)
    err = (unet(noisy, t, encoder_hidden_states=embeds).sample - noise).pow(2).mean(dim=(1, 2, 3))
    unet.disable_adapters()
    with torch.no_grad():
        ref = (unet(noisy, t, encoder_hidden_states=embeds).sample - noise).pow(2).mean(dim=(1, 2, 3))
    unet.enable_adapters()
    (err_w, err_l), (ref_w, ref_l) = err.chunk(2), ref.chunk(2)
    loss = -F.logsigmoid(parts["beta"] / 2 * ((ref_w - err_w) - (ref_l - err_l))).mean()
    loss.backward()
    parts["optimizer"].step()
    parts["optimizer"].zero_grad(set_to_none=True)


def bare_parts(pairs, cfg) -> dict:
    """A separately loaded pipeline with the trainer's LoRA and AdamW settings, and the batch's pixels and tokens."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from rlhf.dpo.data import load_pixels
    from rlhf.models import load_pipeline

    pipe = load_pipeline(PIPELINE)
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):
        part.requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                     target_modules=list(cfg.lora_targets)))
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pixels = np.stack([load_pixels(s, size) for s in [p.winner for p in pairs] + [p.loser for p in pairs]])
    ids = pipe.tokenizer([p.prompt for p in pairs], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    pipe.unet.train()
    return {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "ids": ids, "beta": cfg.beta,
            "scheduler": DDPMScheduler.from_config(pipe.scheduler.config),
            "pixels": torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1),
            "optimizer": torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.adam_betas,
                                           weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)}


def peer_args(job: dict, cfg: dict) -> list[str]:
    data = Path(job["data"])
    return [str(PEER_SCRIPT), "--pretrained_model_name_or_path", str(PIPELINE), "--dataset_name", str(data / "pickapic"),
            "--dataset_split_name", "train", "--cache_dir", str(data / "hf-cache"), "--output_dir", str(data / "run-diffusers"),
            "--resolution", str(cfg["resolution"]), "--train_batch_size", str(cfg["train_batch_size"]),
            "--gradient_accumulation_steps", str(cfg["gradient_accumulation_steps"]), "--rank", str(cfg["lora_rank"]),
            "--learning_rate", str(cfg["learning_rate"]), "--beta_dpo", str(int(cfg["beta"] / 2)),
            "--adam_weight_decay", str(cfg["adam_weight_decay"]), "--adam_epsilon", str(cfg["adam_epsilon"]),
            "--max_grad_norm", str(cfg["max_grad_norm"]), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
            "--max_train_steps", str(job["steps"]), "--checkpointing_steps", str(10**9),
            "--vae_encode_batch_size", str(2 * cfg["train_batch_size"]), "--mixed_precision", "no", "--no_hflip",
            "--seed", str(cfg["seed"]), "--report_to", "tensorboard", "--dataloader_num_workers", "0"]


def peer_worker(job: dict) -> dict:
    """diffusers' script, unmodified, under runpy; its steps clocked and held in lock step at its "Steps" bar."""
    import importlib.machinery
    import runpy
    import types

    quiet_worker()
    import tqdm.auto

    wandb = types.ModuleType("wandb")  # with a spec but no installed metadata: accelerate still finds no wandb
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    sys.modules.setdefault("wandb", wandb)
    baton, times, started = Baton(job), [], []

    class StepClock(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.clocked = kwargs.get("desc") == "Steps"
            if self.clocked:
                baton.pass_()
                started.append(time.perf_counter())

        def update(self, n=1):
            if self.clocked:
                times.append(time.perf_counter() - started[-1])
                baton.pass_()
                started.append(time.perf_counter())
            return super().update(n)

    tqdm.auto.tqdm = StepClock
    sys.argv = peer_args(job, job["config"])
    runpy.run_path(str(PEER_SCRIPT), run_name="__main__")
    if len(times) != job["steps"]:
        raise RuntimeError(f"diffusers' script made {len(times)} progress updates, not {job['steps']}")
    return {"step_s": times, "peak_rss_mib": peak_rss_mib()}


WORKERS = {"ours": ours_worker, "bare": bare_worker, "diffusers": peer_worker}


# --------------------------------------------------------------------------- the parent
class Worker:
    """A side's process, its log file and the parent's ends of its baton pipes."""

    def __init__(self, side: str, python: Path, job: dict, folder: Path):
        go_r, self.go = os.pipe()
        self.idle, idle_w = os.pipe()
        env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                            "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
                            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
        self.side, self.log = side, folder / f"{side}.log"
        job = job | {"side": side, "go_fd": go_r, "idle_fd": idle_w}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([str(python), __file__, "worker", json.dumps(job)], stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=ROOT, pass_fds=(go_r, idle_w))
        os.close(go_r)
        os.close(idle_w)

    def wait_idle(self) -> None:
        if os.read(self.idle, 1) != b".":
            self.fail()

    def turn(self) -> None:
        """Let the worker run its next step (or, after the last, finish) and wait until it is idle again."""
        os.write(self.go, b"g")
        self.wait_idle()

    def result(self) -> dict:
        os.write(self.go, b"g")
        if self.proc.wait():
            self.fail()
        lines = [line for line in self.log.read_text().splitlines() if line.startswith(RESULT_MARK)]
        if not lines:
            self.fail()
        return json.loads(lines[-1][len(RESULT_MARK):])

    def fail(self):
        self.proc.wait()
        sys.exit(f"{self.side} worker failed (exit {self.proc.returncode}):\n{self.log.read_text()[-8000:]}")


def versions(python: Path, modules: str) -> dict:
    code = f"import json,{modules}; print(json.dumps({{m.__name__: m.__version__ for m in ({modules},)}}))"
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def step(args) -> None:
    if not PEER_SCRIPT.is_file():
        sys.exit(f"no diffusers script at {PEER_SCRIPT}")
    if not PEER_PYTHON.exists():
        sys.exit(f"no peer venv at {PEER_PYTHON}: run `bash bench/dpo_peer_env.sh` first")
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)  # noqa: E731
    cfg = toy_config()
    cycles = args.warmup + args.repeats
    with tempfile.TemporaryDirectory(prefix="dpo-step-") as tmp:
        data = Path(tmp)
        batch = write_pairs(data, copies=cycles)
        log(f"drew {batch['pairs']} pairs at {batch['resolution']} px")
        config = {k: getattr(cfg, k) for k in ("train_batch_size", "gradient_accumulation_steps", "lora_rank", "learning_rate",
                                               "beta", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "seed")}
        config["resolution"] = batch["resolution"]
        job = {"data": str(data), "steps": cycles, "config": config}
        workers = [Worker(side, PEER_PYTHON if side == "diffusers" else Path(sys.executable), job, data) for side in SIDES]
        for w in workers:  # each starts up (not timed) and stops before its first step
            w.wait_idle()
        log("all three sides loaded; stepping in lock step")
        for i in range(cycles):
            for w in workers[i % 3:] + workers[:i % 3]:
                w.turn()
            if (i + 1) % 10 == 0:
                log(f"cycle {i + 1}/{cycles}")
        results = {w.side: w.result() for w in workers}
    steps = {side: r["step_s"][args.warmup:] for side, r in results.items()}
    median = {side: statistics.median(v) for side, v in steps.items()}
    result = {
        "dpo_step_vs_bare": round(median["ours"] / median["bare"], 4),
        "dpo_step_vs_diffusers": round(median["ours"] / median["diffusers"], 4),
        "step": {
            "what": ("one Diffusion-DPO optimizer step of rlhf.dpo DiffusionDPOTrainer (toy preset, checkpoints off) on "
                     "data/models/toy-sd, CPU fp32, against the bare work of that step and against diffusers' "
                     "train_diffusion_dpo.py at identical settings; see bench/dpo_vs_ddpo.py"),
            "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/dpo_vs_ddpo.py step",
            "machine": f"{os.cpu_count()} cores shared with other jobs; every worker nice 10 with {THREADS} torch thread",
            "interleaving": "three processes in lock step, one step each per cycle, the order rotating every cycle",
            "warmup": args.warmup, "repeats": args.repeats,
            "batch_pairs": batch["pairs"], "images_per_step": 2 * batch["pairs"], "resolution": batch["resolution"],
            "settings": config | {"beta_dpo_diffusers": int(cfg.beta / 2), "mixed_precision": "no"},
            "pairs": {"prompts": batch["prompts"], "drawn_with": DRAW | {"winner_seeds": f"{PAIRS_SEED}+k",
                                                                          "loser_seeds": f"{PAIRS_SEED + 100}+k"}},
            "median_s": {side: round(v, 5) for side, v in median.items()},
            "step_s": {side: spread(v) for side, v in steps.items()},
            "ratio_per_cycle": {f"ours/{other}": spread([o / x for o, x in zip(steps["ours"], steps[other])])
                                for other in ("bare", "diffusers")},
            "peak_rss_mib": {side: r["peak_rss_mib"] for side, r in results.items()},
            "diffusers_step_timing": ("its 'Steps' progress bar: the clock stops at each update(1) and restarts when "
                                      "the next step may begin; start-up and the final LoRA save excluded"),
            "diffusers_script": "shared/peers/diffusers/train_diffusion_dpo.py (Apache-2.0), unmodified, run by runpy",
            "diffusers_harness": ("bench/.venv-dpo (project venv + datasets, bench/dpo_peer_env.sh); a stand-in wandb "
                                  "module; tqdm.auto.tqdm replaced by a clocking subclass"),
            "versions": {"ours": versions(Path(sys.executable), STACK),
                         "diffusers_side": versions(PEER_PYTHON, STACK + ",datasets")},
            "benchmark_wall_s": round(time.perf_counter() - start, 1),
        },
    }
    log(f"ours / bare {result['dpo_step_vs_bare']}, ours / diffusers {result['dpo_step_vs_diffusers']}, medians "
        f"{result['step']['median_s']} s, peak RSS {result['step']['peak_rss_mib']} MiB")
    if args.dry_run:
        print(json.dumps(result, indent=1))
        return
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(previous | result, indent=2) + "\n")
    log(f"wrote {OUT}")


def methods(args) -> None:
    """DDPO + reward model, Diffusion-DPO and D3PO from the same base, labeller and label budget, over rounds."""
    import numpy as np

    from rlhf.round import evaluate
    from rlhf.round.config import load_config
    from rlhf.round.loop import Loop

    start, results = time.perf_counter(), {}
    for method in args.methods.split(","):
        runs = []
        for seed in range(args.seeds):
            run_dir = Path(tempfile.mkdtemp(prefix=f"dpo-vs-ddpo-{method}-")) / "runs"
            overrides = [f"labeller=synthetic:{args.taste}", f"method={method}", f"seed={seed}", f"ddpo.seed={seed}",
                         f"dpo.seed={seed}"]
            loop = Loop(run_dir, load_config("toy", overrides=overrides))
            minutes = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                loop.run(len(minutes) + 1)
                minutes.append((time.perf_counter() - t0) / 60)
            taste = evaluate.TASTES[args.taste]
            cfg = loop.stored_config(loop.rounds()[0])
            train_set, eval_set = loop.eval_sets(cfg)
            prompts = train_set.jobs()[0]
            scores = [taste.score(list(np.load(run_dir / "eval" / "base-train_prompts.npy")), prompts)]
            scores += [taste.score(list(np.load(loop.round_dir(r) / "eval-train_prompts.npy")), prompts)
                       for r in range(1, args.rounds + 1)]
            evals = [json.loads((loop.round_dir(r) / "eval.json").read_text()) for r in range(1, args.rounds + 1)]
            runs.append({"seed": seed, "scores": scores, "minutes": minutes, "evals": evals,
                         "labels": [len(loop.direct_pairs(r, cfg)) if method != "ddpo" else None
                                    for r in range(1, args.rounds + 1)]})
        mean_scores = [float(np.mean([run["scores"][r].mean() for run in runs])) for r in range(args.rounds + 1)]
        changes = [evaluate.paired_change(np.concatenate([run["scores"][r] for run in runs]),
                                          np.concatenate([run["scores"][0] for run in runs])) for r in range(1, args.rounds + 1)]
        results[method] = {
            "hidden_score": [round(v, 4) for v in mean_scores],
            "hidden_gain_over_base": changes,
            "hidden_score_per_seed": [[round(float(s.mean()), 4) for s in run["scores"]] for run in runs],
            "minutes": [round(float(np.mean([run["minutes"][r] for run in runs])), 2) for r in range(args.rounds)],
            "prompt_following": [round(float(np.mean([runs[0]["evals"][0]["base"]["eval_prompts"]["prompt_following"]])), 4)]
                                + [round(float(np.mean([run["evals"][r]["policy"]["eval_prompts"]["prompt_following"]
                                                        for run in runs])), 4) for r in range(args.rounds)],
            "learned_minus_hidden_gain": [round(float(np.mean([
                (run["evals"][r]["policy"]["train_prompts"]["learned_reward"] - run["evals"][r]["base"]["train_prompts"]["learned_reward"])
                - (run["evals"][r]["policy"]["train_prompts"]["hidden_score"] - run["evals"][r]["base"]["train_prompts"]["hidden_score"])
                for run in runs])), 4) for r in range(args.rounds)],
            "pairs_trained_on": runs[0]["labels"],
        }
        results[method]["seeds"] = args.seeds
        print(method, json.dumps(results[method]), flush=True)
        previous = json.loads(OUT.read_text()) if OUT.is_file() else {}  # each method as it ends; others' are kept
        previous["methods"] = previous.get("methods", {}) | {method: results[method]}
        previous["methods_setup"] = {
            "taste": args.taste, "rounds": args.rounds, "preset": "toy",
            "labels_per_round": "400 pairs queued (32 audit) per round, the same budget for every method",
            "eval": "hidden score: 16 toy_train prompts x 16 held-out seeds; prompt following: 32 toy_eval prompts x 4 seeds",
            "machine": "2 cores, at times shared with other jobs: the minutes are upper bounds"}
        OUT.write_text(json.dumps(previous, indent=2) + "\n")
        print(f"wrote {method} into {OUT} ({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("step", help="one Diffusion-DPO step: ours vs its bare work and vs diffusers' script")
    s.add_argument("--warmup", type=int, default=3, help="untimed cycles at the start")
    s.add_argument("--repeats", type=int, default=90, help="timed cycles (one step of each side per cycle)")
    s.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    s.set_defaults(run=step)
    m = sub.add_parser("methods", help="DDPO + reward model vs Diffusion-DPO vs D3PO over toy rounds")
    m.add_argument("--methods", default="ddpo,diffusion_dpo,d3po", help="comma-separated, e.g. --methods d3po")
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--seeds", type=int, default=2, help="runs per method, each with its own seed of everything random")
    m.add_argument("--taste", default="striped", help="the synthetic labeller's hidden taste")
    m.set_defaults(run=methods)
    w = sub.add_parser("worker")
    w.add_argument("job")
    args = parser.parse_args()
    if args.command == "worker":
        job = json.loads(args.job)
        print(RESULT_MARK + json.dumps(WORKERS[job["side"]](job)), flush=True)
        return
    args.run(args)


if __name__ == "__main__":
    main()
