import json

import pytest

from rlhf.ddpo.__main__ import main

TINY = ["--set", "num_steps=2", "--set", "sample_batch_size=4", "--set", "samples_per_prompt=2",
        "--set", "train_batch_size=4", "--set", "stat_min_count=2"]


def test_cli_runs_an_epoch_and_summarises_it(tmp_path, capsys):
    assert main(["--epochs", "1", "--run-dir", str(tmp_path), "--reward", "jpeg_incompressibility", *TINY]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["epochs"] == 1 and summary["checkpoint"].endswith("epoch-0001")
    assert (tmp_path / "checkpoints" / "epoch-0001" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "eta=0"], "eta=0.0 gives a deterministic sampler"),
        (["--set", "learning_rat=1"], "unknown setting 'learning_rat'; did you mean learning_rate?"),
        (["--set", "num_epochs=abc"], "num_epochs='abc': expected an integer"),
        (["--set", "x0_baseline=true", "--set", "samples_per_prompt=1"], "set samples_per_prompt >= 2"),
        (["--set", "x0_baseline_history=64"], "x0_baseline_history needs x0_baseline=true"),
        (["--prompts", "nope.txt"], "no such prompt file"),
        (["--model", "/no/such/model"], "no pipeline folder at /no/such/model"),
        (["--reward", "sweetness"], "unknown reward 'sweetness'"),
        (["--reward", "preference:/no/such/rm"], "no reward model at '/no/such/rm'"),
    ],
)
def test_cli_bad_input_gets_a_one_line_error(tmp_path, capsys, args, message):
    assert main(["--epochs", "1", "--run-dir", str(tmp_path), *TINY, *args]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_accelerate_launch_with_two_cpu_processes_gathers_both_halves(tmp_path):
    """``accelerate launch`` with 2 gloo processes: each samples 4 trajectories, statistics see all 8."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free loopback port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # `--multi_gpu` on a machine without GPUs starts torch.distributed processes that accelerate runs as
    # MULTI_CPU over gloo; `--cpu` would start a single process.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf.ddpo", "--epochs", "1",
           "--run-dir", str(tmp_path), "--reward", "jpeg_compressibility", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["reward/count"] == 8
    assert (tmp_path / "checkpoints" / "epoch-0001" / "pytorch_lora_weights.safetensors").is_file()
