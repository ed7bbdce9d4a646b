"""Opening a label store: creation, forward migrations, and refusing files that are not ours."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_utils import Database

import rlhf.store
from rlhf.store import MIGRATIONS, NotFound, Store, UnusableDatabase, main

TABLES = {"schema_version", "prompts", "rounds", "images", "pairs", "labellers", "labels", "claims"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "labels.db"


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_open_creates_every_table_in_wal_mode_when_file_is_new(db_path: Path) -> None:
    Store(db_path)
    assert TABLES <= table_names(db_path)
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_connections_use_busy_timeout_and_foreign_keys_when_opened(db_path: Path) -> None:
    with Store(db_path)._connect() as db:
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_schema_version_counts_migrations_when_created(db_path: Path) -> None:
    assert Store(db_path).schema_version() == len(MIGRATIONS) >= 1


def test_new_migration_runs_once_when_store_is_reopened(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(db_path)
    runs = []

    def add_notes(db: Database) -> None:
        runs.append(1)
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(rlhf.store, "MIGRATIONS", [*MIGRATIONS, add_notes])
    assert Store(db_path).schema_version() == len(MIGRATIONS) + 1
    Store(db_path)
    assert runs == [1] and "notes" in table_names(db_path)


def test_failing_migration_changes_nothing_when_it_raises(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(db_path)

    def half_done(db: Database) -> None:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rlhf.store, "MIGRATIONS", [*MIGRATIONS, half_done])
    with pytest.raises(RuntimeError):
        Store(db_path)
    monkeypatch.undo()
    assert Store(db_path).schema_version() == len(MIGRATIONS) and "notes" not in table_names(db_path)


def test_open_refuses_text_file_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "labels.db"
    path.write_text("these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(UnusableDatabase) as error:
        Store(path)
    message = str(error.value)
    assert str(path) in message and "move it aside" in message and "\n" not in message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.db"]


def test_open_refuses_foreign_sqlite_database_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO customers (name) VALUES ('Ada')")
    before = path.read_bytes()
    with pytest.raises(UnusableDatabase, match="customers") as error:
        Store(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert path.read_bytes() == before and table_names(path) == {"customers"}


def test_open_refuses_database_when_schema_is_newer_than_code(db_path: Path) -> None:
    Store(db_path)
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(db_path) as con:
        con.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 'later')", [newer])
    before = db_path.read_bytes()
    with pytest.raises(UnusableDatabase, match=f"schema version {newer} .* up to {len(MIGRATIONS)}; update the code"):
        Store(db_path)
    assert db_path.read_bytes() == before


def test_open_refuses_missing_file_when_create_is_false(db_path: Path) -> None:
    with pytest.raises(NotFound):
        Store(db_path, create=False)
    assert not db_path.exists()


def test_check_reports_dangling_reference_when_foreign_keys_were_bypassed(db_path: Path) -> None:
    store = Store(db_path)
    assert store.check() == []
    with sqlite3.connect(db_path) as con:  # foreign keys are off by default in a bare connection
        con.execute("INSERT INTO images (path, prompt_id, round_id, model_id, sha256, created_at) "
                    "VALUES ('r1/0.png', 5, 9, 'base', 'abc', 'now')")
    assert sorted(store.check()) == ["images row 1 points to a missing prompts row",
                                     "images row 1 points to a missing rounds row"]


def test_cli_check_prints_one_line_error_when_file_is_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "labels.db"
    path.write_bytes(b"\x00garbage" * 100)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err


def test_cli_check_prints_one_line_error_when_file_is_missing(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(db_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1 and not db_path.exists()


def test_cli_check_exits_zero_when_run_as_module_on_healthy_store(db_path: Path) -> None:
    Store(db_path)
    done = subprocess.run([sys.executable, "-m", "rlhf.store", "check", str(db_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "Traceback" not in done.stderr
