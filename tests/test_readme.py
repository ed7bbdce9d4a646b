"""What README.md and docs/config.md tell a user is true: every entry point it names answers --help, the labelling
commands run as written, and the settings reference is the one the code generates."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rlhf.paths import ROOT
from rlhf.round.config import reference
from rlhf.store import Store

README = (ROOT / "README.md").read_text()
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def readme_commands() -> list[str]:
    """Every command in README's bash blocks and inline code: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines() + re.findall(r"`([^`\n]*python -m [^`\n]*)`", README)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def entry_points() -> list[list[str]]:
    """``[module, subcommand?]`` of every ``python -m`` (or ``accelerate launch -m``) command README names."""
    found = []
    for command in readme_commands():
        if match := re.search(r"-m ([\w.]+)((?: [a-z]+)?)", command):
            module, sub = match[1], match[2].split()
            if module.startswith(("rlhf", "reward_models")) and [module, *sub] not in found:
                found.append([module, *sub])
    return found


def test_readme_names_the_entry_points_a_user_needs():
    assert {"rlhf.round", "rlhf.store"} <= {e[0] for e in entry_points()}
    assert ["rlhf.round", "run"] in entry_points() and ["rlhf.round", "reconfigure"] in entry_points()


@pytest.mark.parametrize("entry", entry_points() + [["rlhf.ddpo"], ["rlhf.toy.train"], ["rlhf.round.config"]],
                         ids=" ".join)
def test_every_entry_point_answers_help_with_an_example(entry):
    done = subprocess.run([sys.executable, "-m", *entry, "--help"], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout and ("e.g." in done.stdout or "Example" in done.stdout), done.stdout


def test_docs_config_md_is_what_the_code_generates():
    assert (ROOT / "docs" / "config.md").read_text() == reference(), \
        "docs/config.md is stale: python -m rlhf.round.config --markdown > docs/config.md"


def as_written(command: str, runs: Path) -> str:
    """The README command with its run folders under ``runs`` (the checkout's data/runs stays untouched)."""
    return re.sub(r"\bdata/runs\b", str(runs), command)


@pytest.mark.slow
def test_the_labelling_commands_run_as_written(tmp_path, monkeypatch):
    """README's "Label with your team": a human round samples and queues, the app as written shows its pairs and
    stores a choice, the round waits for the rest, status and reconfigure answer, the labels export and import, and
    Diffusion-DPO trains on the export."""
    commands = [c for c in readme_commands() if "data/runs/mine" in c]
    start, app = commands[0], next(c for c in commands if "streamlit run app/label.py" in c)
    assert start == "python -m rlhf.round run --rounds 1 --run-dir data/runs/mine", commands
    runs = tmp_path / "runs"
    for command in [c for c in commands if c.startswith("python -m rlhf.round")]:
        done = subprocess.run(as_written(command, runs), shell=True, capture_output=True, text=True, cwd=ROOT, env=ENV,
                              timeout=900)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        if command == start:
            assert "waiting for labels" in done.stdout, done.stdout[-2000:]
    store = Store(runs / "mine" / "labels.db")
    assert store.rounds()[0].phase == "label" and store.rounds()[0].config["ddpo"]["num_epochs"] == 20  # reconfigured

    env = dict(word.split("=", 1) for word in shlex.split(as_written(app, runs)) if "=" in word)
    assert env.keys() >= {"RLHF_DB"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RLHF_DATA", raising=False)
    at = AppTest.from_file(str(ROOT / "app" / "label.py"), default_timeout=60).run()
    if "RLHF_APP_TOKEN" in env:
        at.text_input(key="token_input").input(env["RLHF_APP_TOKEN"]).run()
    at.text_input(key="labeller_input").input("ann")
    at.button(key="labeller_submit").click().run()
    left = next(b for b in at.button if b.label == "Left is better")
    assert not left.disabled and not at.exception and not at.error, "the app cannot show the round's images"
    left.click().run()
    assert [label.labeller for label in store.labels(1)] == ["ann"]

    for command in [c for c in readme_commands() if c.startswith("python -m rlhf.store")]:
        done = subprocess.run(as_written(command.replace("labels.jsonl", str(tmp_path / "labels.jsonl")), runs),
                              shell=True, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert len(store.labels(1)) == 1  # the import of its own export changed nothing

    (dpo,) = [c for c in readme_commands() if c.startswith("python -m rlhf.dpo")]
    done = subprocess.run(as_written(dpo.replace("labels.jsonl", str(tmp_path / "labels.jsonl")), runs)
                          + f" --run-dir {tmp_path / 'dpo'}", shell=True, capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=600)
    assert done.returncode == 0, (dpo, done.stderr[-2000:])
    assert '"pairs": 1' in done.stdout and (tmp_path / "dpo" / "checkpoints").is_dir()
