"""Settings are typed and checked before any work: a bad one costs one line and writes nothing; a round whose stored
settings cannot run is reconfigured, keeping its labels; a missing model leaves the round resumable."""
from __future__ import annotations

import shutil

import pytest

from rlhf.ddpo.config import DDPOConfig
from rlhf.dpo.config import DPOConfig
from rlhf.paths import TOY_PIPELINE
from rlhf.round.__main__ import main
from rlhf.round.config import RoundConfig, load_config
from rlhf.round.loop import Loop
from rlhf.settings import SettingError, coerce, convert, field_docs, parse_value
from rlhf.store import Store
from test_round import TINY, assert_round_complete, tiny


@pytest.mark.parametrize("text, value", [("30", 30), ("1e-4", 1e-4), ("true", True), ("[0.9, 0.99]", [0.9, 0.99]),
                                         ("abc", "abc"), ('"quoted"', "quoted"), ("org/name@v1", "org/name@v1")])
def test_set_values_parse_as_toml_reads_them(text, value):
    assert parse_value(text) == value


def test_values_convert_to_the_declared_types():
    typed = coerce(DDPOConfig, {"learning_rate": 1, "adam_betas": [0.9, 0.99], "lora_targets": ["to_q"],
                                "use_lora": False})
    assert typed == {"learning_rate": 1.0, "adam_betas": (0.9, 0.99), "lora_targets": ("to_q",), "use_lora": False}
    assert isinstance(typed["learning_rate"], float)
    assert convert("", str | None, "aesthetic_weights") is None


@pytest.mark.parametrize("value, tp, message", [
    ("abc", int, "n='abc': expected an integer"), (2.5, int, "n=2.5: expected an integer"),
    (True, int, "n=True: expected an integer"), ("yes", bool, "n='yes': expected true or false"),
    (3, str, "n=3: expected text"), ([1], tuple[float, float], "expected a list of 2 values"),
])
def test_a_wrong_type_is_refused_not_coerced(value, tp, message):
    with pytest.raises(SettingError, match=message.replace("[", r"\[")):
        convert(value, tp, "n")


BAD = [  # (--set, what the one line must say): types, ranges, unknown keys, unknown choices, files
    ("ddpo.num_epochs=abc", "ddpo.num_epochs='abc': expected an integer"),
    ("pairs_per_round=abc", "pairs_per_round='abc': expected an integer"),
    ("ddpo.learning_rate=fast", "ddpo.learning_rate='fast': expected a number"),
    ("ddpo.use_lora=maybe", "ddpo.use_lora='maybe': expected true or false"),
    ("images_per_prompt=1", "images_per_prompt=1 must be >= 2"),
    ("random_share=2", "random_share=2.0: use a share in [0, 1]"),
    ("ddpo.learning_rate=-1", "learning_rate=-1.0 must be > 0"),
    ("ddpo.train_batch_size=0", "train_batch_size=0 must be >= 1"),
    ("audit_pairs=500", "audit_pairs=500 must be below pairs_per_round"),
    ("pairs_per_rond=3", "unknown setting 'pairs_per_rond'; did you mean pairs_per_round?"),
    ("ddpo.lerning_rate=1", "unknown setting 'ddpo.lerning_rate'; did you mean ddpo.learning_rate?"),
    ("mixed_precision=fp8", "mixed_precision='fp8': choose one of 'no', 'fp16', 'bf16'"),
    ("ddpo.loss=xx", "loss='xx': choose one of 'is', 'sf'"),
    ("ddpo_preset=big", "ddpo_preset='big': choose one of"),
    ("labeller=synthetic:sweet", "unknown taste 'sweet'"),
    ("labeller=robot", "labeller='robot': use 'human' or"),
    ("prompts=missing.txt", "missing.txt: no such prompt file"),
    ("clip=nonsense", "no CLIP folder at nonsense"),
    ("pipeline=/no/such/pipeline", "no pipeline folder at /no/such/pipeline"),
    ("aesthetic_weights=/no/head.pth", "no aesthetic head weights file at /no/head.pth"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_setting_costs_one_line_and_writes_nothing(tmp_path, capsys, override, message):
    run_dir = tmp_path / "runs"
    assert main(["run", "--rounds", "1", "--run-dir", str(run_dir), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not tmp_path.joinpath("runs").exists()  # no run folder, no labels.db


def test_options_before_the_command_count_as_after_it(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    assert main(["--set", "ddpo.num_epochs=abc", "--run-dir", str(run_dir), "run", "--rounds", "1"]) == 2
    assert "ddpo.num_epochs='abc'" in capsys.readouterr().err and not run_dir.exists()


def test_a_bad_toml_value_and_a_binary_prompt_file_write_nothing(tmp_path, capsys):
    (tmp_path / "round.toml").write_text('pairs_per_round = "many"\n[ddpo]\nnum_epochs = 3\n')
    (tmp_path / "prompts.txt").write_bytes(b"\xff\xfe\x00binary")
    assert main(["--run-dir", str(tmp_path / "a"), "--config", str(tmp_path / "round.toml")]) == 2
    assert main(["--run-dir", str(tmp_path / "b"), "--set", f"prompts={tmp_path / 'prompts.txt'}"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "pairs_per_round='many': expected an integer" in errors[0] and "not UTF-8 text" in errors[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_toml_file_sets_round_and_ddpo_settings(tmp_path):
    (tmp_path / "round.toml").write_text('pairs_per_round = 120\n[ddpo]\nnum_epochs = 3\nlearning_rate = 1\n')
    cfg = load_config("toy", tmp_path / "round.toml")
    assert cfg.pairs_per_round == 120 and cfg.ddpo_config().num_epochs == 3
    assert cfg.ddpo["kl_coef"] == RoundConfig().ddpo["kl_coef"]  # the preset's other DDPO overrides stay
    assert cfg.ddpo_config().learning_rate == 1.0 and isinstance(cfg.ddpo["learning_rate"], float)


def _cli(run_dir, *extra: str) -> int:
    return main(["run", "--rounds", "1", "--run-dir", str(run_dir), "--labeller", "synthetic:large_warm",
                 *[a for item in TINY for a in ("--set", item)], *extra])


@pytest.mark.slow
def test_a_bad_value_then_its_fix_completes_the_round(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    assert _cli(run_dir, "--set", "ddpo.num_epochs=abc") == 2
    assert not run_dir.exists()
    assert _cli(run_dir, "--set", "ddpo.num_epochs=1") == 0
    assert_round_complete(run_dir)


@pytest.mark.slow
def test_a_round_whose_stored_settings_no_longer_run_is_reconfigured_keeping_its_labels(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    loop = Loop(run_dir, tiny())
    while loop.current() is None or loop.current().phase != "reward":
        loop.step()
    labels = loop.store.labels(1)
    stale = loop.current().config | {"ddpo": {**loop.current().config["ddpo"], "num_epochs": "abc"}, "retired_setting": 1}
    loop.store.set_round_config(1, stale)  # as an older version, or a hand edit, might have left it
    capsys.readouterr()
    assert main(["step", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "round 1's stored settings cannot run" in err and "reconfigure" in err
    assert main(["reconfigure", "--run-dir", str(run_dir), "--set", "ddpo.num_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "ddpo.num_epochs=1" in out and "retired_setting=(removed)" in out and "labels are kept" in out
    assert main(["run", "--rounds", "1", "--run-dir", str(run_dir)]) == 0
    store = Store(run_dir / "labels.db")
    assert store.rounds()[0].phase == "done" and store.labels(1) == labels
    assert store.rounds()[0].config["ddpo"]["num_epochs"] == 1


def test_reconfigure_refuses_a_bad_value_and_a_finished_run(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    assert main(["reconfigure", "--run-dir", str(run_dir)]) == 2
    loop = Loop(run_dir, tiny())
    loop.store.add_round(loop.config.to_dict(), phase="sample")
    before = loop.current().config
    assert main(["reconfigure", "--run-dir", str(run_dir), "--set", "eval_seeds=0"]) == 2
    assert loop.current().config == before
    loop.store.set_phase(1, "done")
    assert main(["reconfigure", "--run-dir", str(run_dir), "--set", "eval_seeds=2"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "no label store" in errors[0] and "eval_seeds=0 must be >= 1" in errors[1] and "no unfinished round" in errors[2]


@pytest.mark.slow
def test_a_phase_that_misses_its_model_leaves_the_round_resumable(tmp_path, capsys):
    pipeline = tmp_path / "models" / "my-sd"
    shutil.copytree(TOY_PIPELINE, pipeline)
    run_dir = tmp_path / "runs"
    loop = Loop(run_dir, tiny("synthetic:large_warm", f"pipeline={pipeline}"))
    loop.step()  # sample
    pipeline.rename(tmp_path / "models" / "elsewhere")
    with pytest.raises(Exception, match=f"no pipeline folder at {pipeline}"):
        loop.step()
    assert loop.current().phase == "queue"  # nothing advanced, nothing lost
    (tmp_path / "models" / "elsewhere").rename(pipeline)
    loop.run(1)
    assert_round_complete(run_dir)


def test_every_setting_has_a_docstring():
    for cls in (RoundConfig, DDPOConfig, DPOConfig):
        assert [name for name, doc in field_docs(cls).items() if not doc] == [], cls.__name__

