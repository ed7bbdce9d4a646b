"""Export to and import from the Pick-a-Pic-like exchange format."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rlhf.store import ImportReport, Store, StoreError, main


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Two rounds, two prompts, and labels of every choice by two labellers."""
    store = Store(tmp_path / "labels.db")
    pairs = []
    for round_id in (store.add_round({"lr": 1e-5}), store.add_round({"lr": 3e-5})):
        for prompt, category in (("a red cube", "colours"), ("two cats", None)):
            store.add_prompt(prompt, category)
            images = [store.add_image(f"r{round_id}/{prompt}/{i}.png", prompt, round_id, 100 + i, f"ckpt-{round_id}",
                                      hashlib.sha256(f"{round_id}/{prompt}/{i}".encode()).hexdigest()) for i in range(3)]
            pairs += store.queue_pairs([(images[0], images[1]), (images[1], images[2])], selection="active")
    choices = ["left", "right", "tie", "both_bad", "skip", "left", "right", "tie"]
    for labeller in ("ann", "bob"):
        for pair_id, choice in zip(pairs, choices if labeller == "ann" else choices[::-1]):
            pair = store.claim_next_pair(labeller)
            store.record_label(pair.pair_id, labeller, choice, pair.left.id, response_ms=None if choice == "skip" else 1500)
    return store


def fresh(tmp_path: Path, name: str = "fresh.db") -> Store:
    return Store(tmp_path / name)


def label_keys(store: Store) -> list[tuple]:
    """Every label with the paths of the images shown left and right (ids differ between stores)."""
    with store._connect() as db:
        paths = dict(db.execute("SELECT id, path FROM images").fetchall())
    return sorted((label.labeller, label.choice, label.response_ms, label.created_at, label.round_id,
                   paths[label.left_image], paths[label.right_image]) for label in store.labels())


def preference_keys(store: Store) -> list[tuple]:
    return sorted((p.labeller, p.prompt, p.round_id, p.winner_path, p.loser_path, p.tie) for p in store.preferences())


def test_jsonl_round_trip_keeps_preferences_and_labels_when_imported_into_fresh_store(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    assert store.export(out) == 16
    copy = fresh(tmp_path)
    assert copy.import_labels(out) == ImportReport(added=16, unchanged=0, conflicts=0)
    assert preference_keys(copy) == preference_keys(store) and len(copy.preferences()) == 12
    assert label_keys(copy) == label_keys(store)  # both_bad, skip and shown sides included
    assert copy.agreement() == store.agreement()


def test_import_adds_nothing_when_same_file_is_imported_twice(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store.export(out)
    copy = fresh(tmp_path)
    copy.import_labels(out)
    before = (copy.labels(), copy.preferences(), copy.progress("ann"))
    assert copy.import_labels(out) == ImportReport(added=0, unchanged=16, conflicts=0)
    assert store.import_labels(out) == ImportReport(added=0, unchanged=16, conflicts=0)
    assert (copy.labels(), copy.preferences(), copy.progress("ann")) == before


def test_import_keeps_stored_label_when_file_disagrees(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store.export(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[0]["choice"] = "both_bad"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = store.labels()
    assert store.import_labels(out) == ImportReport(added=0, unchanged=15, conflicts=1)
    assert store.labels() == before


def test_import_adds_nothing_when_a_row_is_invalid(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store.export(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    del rows[-1]["image_1_uid"]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    copy = fresh(tmp_path)
    with pytest.raises(StoreError, match=r"row 16: missing image_1_uid"):
        copy.import_labels(out)
    assert copy.labels() == [] and copy.check() == []


def test_export_writes_pick_a_pic_labels_when_choices_differ(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store.export(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"caption", "image_0", "image_1", "label_0", "label_1", "user_id", "created_at", "model_0", "model_1",
            "ranking_id"} <= set(rows[0])
    winners = {(p.labeller, p.winner_path) for p in store.preferences() if not p.tie}
    for row in rows:
        labels = (row["label_0"], row["label_1"])
        if row["choice"] == "tie":
            assert labels == (0.5, 0.5) and row["has_label"] == 1
        elif row["choice"] in ("both_bad", "skip"):
            assert labels == (0, 0) and row["has_label"] == 0
        else:
            assert (row["user_id"], row["image_0"] if labels == (1, 0) else row["image_1"]) in winners


def test_import_derives_choice_from_labels_when_choice_column_is_absent(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store.export(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [{k: v for k, v in row.items() if k != "choice"} for row in rows if row["has_label"]]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    copy = fresh(tmp_path)
    copy.import_labels(out)
    assert preference_keys(copy) == preference_keys(store)


def test_parquet_round_trip_matches_jsonl_when_pyarrow_is_installed(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "labels.parquet"
    assert store.export(out) == 16
    copy = fresh(tmp_path)
    assert copy.import_labels(out).added == 16
    assert preference_keys(copy) == preference_keys(store) and label_keys(copy) == label_keys(store)


def test_cli_exports_and_imports_with_exit_zero_and_reports_missing_input_in_one_line(
        store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "labels.jsonl"
    assert main(["export", str(store.path), str(out)]) == 0
    target = tmp_path / "cli.db"
    assert main(["import", str(target), str(out)]) == 0
    assert "imported 16 labels" in capsys.readouterr().out
    assert main(["import", str(target), str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.jsonl does not exist" in err
    assert preference_keys(Store(target)) == preference_keys(store)
