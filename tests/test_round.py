"""The rounds driver on the shipped toy models with a synthetic labeller, at sizes that take seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from app.labelui.dashboard import read_rounds, round_metrics
from rlhf.lora import latest_checkpoint
from rlhf.paths import ROOT
from rlhf.round.__main__ import hidden_gains, main
from rlhf.round.config import ConfigError, load_config
from rlhf.round.loop import Loop, RoundError
from rlhf.store import Store

PROMPTS = 3
IMAGES_PER_PROMPT = 3
PAIRS = 7
TINY = [
    f"prompts={ROOT / 'tests' / 'data' / 'three_prompts.txt'}", f"images_per_prompt={IMAGES_PER_PROMPT}",
    f"pairs_per_round={PAIRS}", "audit_pairs=2", "eval_prompt_count=2", "eval_seeds=1", "eval_prompt_seeds=1",
    "ddpo.num_steps=4", "ddpo.timesteps_per_forward=4", "ddpo.sample_batch_size=4", "ddpo.samples_per_prompt=2",
    "ddpo.train_batch_size=4", "ddpo.num_epochs=2", "ddpo.save_every=1",
]


def tiny(labeller: str = "synthetic:large_warm", *extra: str):
    return load_config("toy", overrides=TINY + [f"labeller={labeller}", *extra])


def assert_round_complete(run_dir, rounds: int = 1) -> None:
    store = Store(run_dir / "labels.db")
    assert [r.phase for r in store.rounds()] == ["done"] * rounds
    assert store.check() == []
    for r in range(1, rounds + 1):
        assert len(store.images(r)) == PROMPTS * IMAGES_PER_PROMPT
        pairs = store.pairs(r)
        assert len(pairs) == PAIRS == len({(p.image_a, p.image_b) for p in pairs})
        assert len(store.labels(r)) == PAIRS
    assert len({im.path for im in store.images()}) == rounds * PROMPTS * IMAGES_PER_PROMPT


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("data") / "runs"
    loop = Loop(run_dir, tiny())
    outcomes = loop.run(2)
    return loop, outcomes


def test_two_toy_rounds_go_through_every_phase(two_rounds):
    loop, outcomes = two_rounds
    assert [(o.round_id, o.phase) for o in outcomes] == [
        (r, p) for r in (1, 2) for p in ("sample", "queue", "label", "reward", "train", "eval")]
    assert_round_complete(loop.run_dir, rounds=2)
    selections = {p.selection for p in loop.store.pairs(2)}
    assert selections == {"audit", "random", "active"}  # round 2 has a reward model to be active with
    assert {p.selection for p in loop.store.pairs(1)} == {"audit", "random"}


def test_each_round_starts_from_the_previous_policy_and_records_its_config(two_rounds):
    loop, _ = two_rounds
    images = loop.store.images()
    assert {im.model_id for im in images if im.round_id == 1} == {"base"}
    assert {im.model_id for im in images if im.round_id == 2} == {"round-1"}
    assert loop.rounds()[1].config["labeller"] == "synthetic:large_warm"
    ddpo_seeds = [torch.load(latest_checkpoint(loop.round_dir(r) / "ddpo") / "trainer_state.pt", weights_only=False)
                  ["config"]["seed"] for r in (1, 2)]
    assert ddpo_seeds[1] == ddpo_seeds[0] + 1  # each round draws fresh noise and prompts
    # the same prompt and seed in both rounds: the before/after pairs of the dashboard's gallery
    seeds = {r: {(im.prompt, im.seed) for im in images if im.round_id == r} for r in (1, 2)}
    assert seeds[1] == seeds[2]


def test_reports_and_the_dashboard_file(two_rounds):
    loop, _ = two_rounds
    rounds = read_rounds(loop.run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    assert len(rounds[1]["reward/mean"]) == 2 and len(rounds[1]["judge/hidden"]) == 2
    assert rounds[1]["rm/labels"] == 2 * (PAIRS - 2)  # both rounds' labels but the audit pairs
    assert "rm/accuracy" in round_metrics(rounds).columns
    curve = rounds[1]["rm/learning_curve"]
    assert [p["labels"] for p in curve] == sorted(p["labels"] for p in curve) and 0 <= curve[-1]["accuracy"] <= 1
    report = (loop.run_dir / "report.md").read_text()
    assert "| 0 (base) |" in report and "round-002/report.md" in report
    for name in ("scores.png", "ddpo_learned.png", "ddpo_hidden.png", "round-002/before_after.png",
                 "round-002/report.md", "round-002/reward_model/reliability.png"):
        assert (loop.run_dir / name).is_file(), name
    result = json.loads((loop.run_dir / "round-002" / "eval.json").read_text())
    for model in ("base", "policy"):
        figures = result[model]["eval_prompts"]
        assert 0 <= figures["prompt_following"] <= 1 and np.isfinite(figures["learned_reward"])
        assert np.isfinite(figures["hidden_score"]) and np.isfinite(figures["clip_score"])


def test_round_gains_pair_each_policy_with_the_one_before_on_the_same_seeds(two_rounds):
    loop, _ = two_rounds
    records = read_rounds(loop.run_dir)
    hidden = [records[0]["judge/base/train_prompts/hidden_score"]] + [r["judge/policy/train_prompts/hidden_score"] for r in records]
    gains = hidden_gains(loop, 2)
    assert [g["mean"] for g in gains] == pytest.approx(np.diff(hidden), abs=1e-4)
    assert all(g["se"] >= 0 for g in gains)


def test_a_finished_run_has_nothing_left_to_redo(two_rounds):
    loop, _ = two_rounds
    assert loop.run(2) == []


def test_eval_adds_hpsv2_and_the_aesthetic_head_when_their_weights_exist(two_rounds, preference_clip, tmp_path):
    from dataclasses import replace

    from rlhf.ddpo.rewards import AestheticHead
    from rlhf.round.config import from_dict

    loop, _ = two_rounds
    weights, arch = preference_clip
    torch.save(AestheticHead(64).state_dict(), tmp_path / "head.pth")
    cfg = replace(from_dict(loop.rounds()[1].config), hpsv2_weights=str(weights), hpsv2_arch=arch,
                  aesthetic_weights=str(tmp_path / "head.pth"))
    result = loop.evaluate(2, cfg)
    for model in ("base", "policy"):
        figures = result[model]["eval_prompts"]
        assert np.isfinite(figures["hpsv2"]) and np.isfinite(figures["aesthetic"]), figures


def test_people_label_while_the_driver_waits(tmp_path):
    loop = Loop(tmp_path / "runs", tiny("human"))
    assert [o.phase for o in loop.run(1)] == ["sample", "queue", "label"]
    assert loop.run(1)[-1].waiting and loop.current().phase == "label"
    while (pair := loop.store.claim_next_pair("ann", 1)) is not None:
        loop.store.record_label(pair.pair_id, "ann", "skip", pair.left.id)
    with pytest.raises(RoundError, match="only 0 usable labels"):
        loop.run(1)  # all skipped: nothing to learn from, said in one line
    assert loop.current().phase == "reward"


def test_bad_settings_get_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown setting 'pairs_per_rond'; did you mean pairs_per_round"):
        load_config("toy", overrides=["pairs_per_rond=3"])
    with pytest.raises(ConfigError, match="images_per_prompt=1"):
        load_config("toy", overrides=["images_per_prompt=1"])
    with pytest.raises(ConfigError, match="unknown setting 'ddpo.learning_rat'"):
        load_config("toy", overrides=["ddpo.learning_rat=1"])
    assert load_config("sd15").mixed_precision == "fp16"
    (tmp_path / "bad.toml").write_text("pairs_per_round = [")
    assert main(["status", "--run-dir", str(tmp_path / "runs"), "--config", str(tmp_path / "bad.toml")]) == 2
    assert main(["--run-dir", str(tmp_path / "runs"), "--set", f"pipeline={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 2 and errors[0].startswith("error: cannot read config file")
    assert str(tmp_path / "missing") in errors[1]


CRASH_POINTS = ["sample#4", "phase#1", "queue#2", "label#3", "reward", "phase#4", "ddpo_epoch#2", "checkpoint#1",
                "checkpoint#2", "eval#1", "eval#3"]


DIRECT = ["dpo.max_train_steps=4", "dpo.train_batch_size=2", "dpo.save_every=2"]
"""A direct method's training at test size: 4 steps, a checkpoint after steps 2 and 4."""
DIRECT_CRASH_POINTS = ["sample#4", "dpo_step#3", "checkpoint#1", "checkpoint#2", "phase#5"]


def _run_cli(run_dir, crash: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} | ({"RLHF_CRASH_AT": crash} if crash else {})
    args = [a for item in TINY + list(extra) for a in ("--set", item)]
    return subprocess.run([sys.executable, "-m", "rlhf.round", "run", "--rounds", "1", "--run-dir", str(run_dir),
                           "--labeller", "synthetic:large_warm", *args], env=env, capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_anywhere_then_rerun_finishes_the_round_exactly_once(tmp_path, point):
    run_dir = tmp_path / "runs"
    killed = _run_cli(run_dir, point)
    assert killed.returncode == -9, killed.stderr[-2000:]
    finished = _run_cli(run_dir)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert_round_complete(run_dir)
    assert not list(run_dir.rglob(".tmp-*"))  # every half-written file or folder was replaced
    assert (run_dir / "round-001" / "ddpo" / "checkpoints" / "epoch-0002" / "trainer_state.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("point", DIRECT_CRASH_POINTS)
def test_sigkill_in_a_d3po_round_then_rerun_finishes_it_exactly_once(tmp_path, point):
    """D3PO's round adds trajectory files to sampling and a direct trainer to training: the same guarantees hold."""
    run_dir = tmp_path / "runs"
    killed = _run_cli(run_dir, point, "method=d3po", *DIRECT)
    assert killed.returncode == -9, killed.stderr[-2000:]
    finished = _run_cli(run_dir, None, "method=d3po", *DIRECT)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert_round_complete(run_dir)
    assert not list(run_dir.rglob(".tmp-*"))
    images = Store(run_dir / "labels.db").images(1)
    assert all((run_dir.parent / im.path).with_suffix(".traj.npz").is_file() for im in images)
    state = torch.load(run_dir / "round-001" / "d3po" / "checkpoints" / "step-000004" / "trainer_state.pt",
                       weights_only=False)
    assert state["method"] == "d3po" and state["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddpo", "diffusion_dpo", "d3po"])
def test_the_training_phase_under_accelerate_launch_with_two_cpu_processes(tmp_path, method):
    """The driver under ``accelerate launch``: one process runs the other phases, both train (gloo)."""
    import socket

    run_dir = tmp_path / "runs"
    loop = Loop(run_dir, tiny("synthetic:large_warm", f"method={method}", *DIRECT))
    while loop.current() is None or loop.current().phase != "train":
        loop.step()
    with socket.socket() as s:  # a free loopback port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "rlhf.round", "step", "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = [json.loads(line) for line in (run_dir / "round-001" / method / "metrics.jsonl").read_text().splitlines()]
    if method == "ddpo":
        assert [m["reward/count"] for m in metrics] == [8, 8]  # 4 samples per process per epoch, gathered
    else:
        assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # logged by the main process alone
        assert latest_checkpoint(run_dir / "round-001" / method).name == "step-000004"
    assert loop.current().phase == "eval"
