"""The label store: every human choice between two images of one prompt, kept in SQLite.

Labels are the most precious thing the product holds, so the store never
overwrites or silently drops one: a second label of a pair by the same labeller
is refused, a trigger makes stored labels immutable, every write is one short
``BEGIN IMMEDIATE`` transaction, and labels are committed with ``synchronous=FULL``.
Every public call opens and closes its own connection, so one ``Store`` can be
shared by Streamlit threads and used by several processes at once.

Command line: ``python -m rlhf.store check DB``, ``export DB OUT.jsonl``,
``import DB IN.jsonl`` (``.parquet`` works too when pyarrow is installed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from sqlite_utils import Database
from sqlite_utils.utils import sqlite3  # the driver sqlite-utils uses (pysqlite3 when installed)

CHOICES = ("left", "right", "tie", "both_bad", "skip")
PREFERENCE_CHOICES = ("left", "right", "tie")
SELECTIONS = ("random", "active", "audit")
BUSY_TIMEOUT_MS = 5000
LOCK_ATTEMPTS = 3  # busy timeouts a write waits for the lock before giving up
CLAIM_TTL = timedelta(minutes=10)  # a claimed pair left unlabelled this long counts as free again
IMPORT_COLUMNS = ("caption", "image_0", "image_1", "label_0", "label_1", "user_id", "created_at",
                  "model_0", "model_1", "image_0_uid", "image_1_uid", "round_id")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreError(Exception):
    """Why the store refused an operation, in one line a person can act on."""


class UnusableDatabase(StoreError):
    """The file is not a label store this code may open: corrupt, foreign, or from newer code."""


class StoreBusy(StoreError):
    """Other writers held the database for too long; nothing was written, try again."""


class NotFound(StoreError, LookupError):
    """A prompt, round, image, pair or file that was referred to does not exist."""


class InvalidValue(StoreError, ValueError):
    """An argument outside what the schema allows (unknown choice, absolute path, ...)."""


class PromptMismatch(StoreError):
    """Two images of different prompts cannot form a pair: the comparison would be meaningless."""


class ImageConflict(StoreError):
    """An image path already holds other bytes; reusing it would change what old labels judged."""


class AlreadyLabelled(StoreError):
    """The labeller already judged this pair; labels are never overwritten, undo first."""


@dataclass(frozen=True)
class Image:
    id: int
    path: str
    model_id: str
    seed: int | None


@dataclass(frozen=True)
class PairToLabel:
    """A pair as one labeller sees it: ``left`` and ``right`` are in screen order."""

    pair_id: int
    round_id: int
    prompt: str
    selection: str
    left: Image
    right: Image


@dataclass(frozen=True)
class Label:
    id: int
    pair_id: int
    round_id: int
    labeller: str
    choice: str
    left_image: int
    right_image: int
    response_ms: int | None
    created_at: str

    @property
    def judgement(self) -> str | None:
        """The choice in image order ('a': lower image id won), comparable across labellers who saw
        different sides; None for 'skip', which judges nothing."""
        if self.choice == "skip":
            return None
        if self.choice in ("left", "right"):
            winner = self.left_image if self.choice == "left" else self.right_image
            return "a" if winner == min(self.left_image, self.right_image) else "b"
        return self.choice


@dataclass(frozen=True)
class Preference:
    """One usable training comparison; for a tie, winner and loser are just the two images."""

    label_id: int
    pair_id: int
    round_id: int
    labeller: str
    prompt: str
    winner_image: int
    loser_image: int
    winner_path: str
    loser_path: str
    tie: bool


@dataclass(frozen=True)
class Agreement:
    """Agreement over every two labellers who judged the same pair; None where undefined."""

    comparisons: int
    percent: float | None
    kappa: float | None


@dataclass(frozen=True)
class ImportReport:
    added: int
    unchanged: int
    conflicts: int  # the store already held a different label: kept, never overwritten


@dataclass(frozen=True)
class Round:
    id: int
    phase: str
    config: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class StoredImage:
    """An image row with its prompt's text: what the rounds driver pairs and scores."""

    id: int
    path: str
    prompt: str
    round_id: int
    seed: int | None
    model_id: str


@dataclass(frozen=True)
class Pair:
    id: int
    round_id: int
    image_a: int
    image_b: int
    selection: str


class Progress(NamedTuple):
    labelled: int  # labels by this labeller
    queued: int  # pairs they have not labelled yet


SCHEMA_V1 = """
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE,
    category TEXT
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    phase TEXT NOT NULL,
    created_at TEXT NOT NULL,
    config TEXT NOT NULL CHECK (json_valid(config))
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    seed INTEGER,
    model_id TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    image_a INTEGER NOT NULL REFERENCES images(id),
    image_b INTEGER NOT NULL REFERENCES images(id),
    selection TEXT NOT NULL CHECK (selection IN ('random', 'active', 'audit')),
    created_at TEXT NOT NULL,
    CHECK (image_a < image_b),
    UNIQUE (round_id, image_a, image_b)
);
CREATE TABLE labellers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    labeller_id INTEGER NOT NULL REFERENCES labellers(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad', 'skip')),
    left_image INTEGER NOT NULL REFERENCES images(id),
    created_at TEXT NOT NULL,
    response_ms INTEGER CHECK (response_ms >= 0),
    UNIQUE (pair_id, labeller_id)
);
CREATE INDEX labels_by_labeller ON labels (labeller_id, id);
CREATE TABLE claims (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    labeller_id INTEGER NOT NULL REFERENCES labellers(id),
    claimed_at TEXT NOT NULL,
    UNIQUE (pair_id, labeller_id)
);
CREATE INDEX claims_by_labeller ON claims (labeller_id, id);
CREATE TRIGGER labels_are_immutable BEFORE UPDATE ON labels
BEGIN
    SELECT RAISE(ABORT, 'labels are immutable: undo the label and record a new one');
END;
CREATE TRIGGER labels_show_their_pair BEFORE INSERT ON labels
WHEN NEW.left_image NOT IN (SELECT image_a FROM pairs WHERE id = NEW.pair_id
                            UNION ALL SELECT image_b FROM pairs WHERE id = NEW.pair_id)
BEGIN
    SELECT RAISE(ABORT, 'left_image is not an image of this pair');
END;
"""


_OPEN_CLAIM = """
SELECT c.pair_id FROM claims c JOIN pairs p ON p.id = c.pair_id
WHERE c.labeller_id = :me AND (:round IS NULL OR p.round_id = :round)
ORDER BY c.id DESC LIMIT 1
"""
# Stops at the first free pair, so it stays fast while the queue is being covered.
_UNTOUCHED_PAIR = """
SELECT p.id FROM pairs p
WHERE (:round IS NULL OR p.round_id = :round)
  AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.pair_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pair_id = p.id AND c.claimed_at > :cutoff)
ORDER BY p.id LIMIT 1
"""
_LEAST_LOADED_PAIR = """
SELECT p.id FROM pairs p
WHERE (:round IS NULL OR p.round_id = :round)
  AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.pair_id = p.id AND l.labeller_id = :me)
ORDER BY (SELECT count(*) FROM labels l WHERE l.pair_id = p.id)
       + (SELECT count(*) FROM claims c WHERE c.pair_id = p.id AND c.claimed_at > :cutoff), p.id
LIMIT 1
"""


def _create_tables(db: Database) -> None:
    db.executescript(SCHEMA_V1)


MIGRATIONS: list[Callable[[Database], None]] = [_create_tables]
"""Forward migrations, applied in order; the store's version is how many have run. Only append."""


class Store:
    """The label database at ``path``. It holds no connection, so it is cheap and safe to share."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise InvalidValue("the label store needs a file: every operation opens its own connection")
        if not create and not self.path.exists():
            raise NotFound(f"{self.path} does not exist; pass the path of an existing label store")
        self._prepare()

    @contextmanager
    def _connect(self) -> Iterator[Database]:
        """A connection for one operation: sqlite3 connections must not be shared across threads."""
        try:
            db = Database(self.path)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path}: {e}") from None
        try:
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA synchronous = FULL")
            except sqlite3.DatabaseError as e:
                raise self._unreadable(e) from None
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[Database]:
        """One transaction holding the write lock from its first read, so read-then-write cannot race
        (a deferred BEGIN fails with 'database is locked' when two writers upgrade at once).

        ``durable=False`` skips the fsync at commit, for writes a power cut may lose harmlessly
        (claims); the next durable commit makes them durable too.
        """
        with self._connect() as db:
            if not durable:
                db.execute("PRAGMA synchronous = NORMAL")
            self._lock(db)
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise

    def _lock(self, db: Database) -> None:
        """BEGIN IMMEDIATE, waiting up to LOCK_ATTEMPTS busy timeouts: retrying is safe because nothing
        has been read or written yet, and a label click should outlast a long import or a burst."""
        for _ in range(LOCK_ATTEMPTS):
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e):
                    raise
        raise StoreBusy(f"{self.path} stayed locked by another writer for "
                        f"{LOCK_ATTEMPTS * BUSY_TIMEOUT_MS // 1000} s; try again")

    def _prepare(self) -> None:
        """Refuse a file that is not a label store before changing a byte of it, then migrate."""
        with self._connect() as db:
            try:
                tables = set(db.table_names())
            except sqlite3.DatabaseError as e:
                raise self._unreadable(e) from None
            if tables and "schema_version" not in tables:
                raise UnusableDatabase(
                    f"{self.path} holds other tables ({', '.join(sorted(tables))}) and no label store; "
                    "pass a path for a new label store")
            version = _version(db) if tables else 0
            self._refuse_newer(version)
            db.enable_wal()
        if version < len(MIGRATIONS):
            with self._write() as db:
                self._migrate(db)

    def _migrate(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                   "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        version = _version(db)  # again under the write lock: another process may have migrated
        self._refuse_newer(version)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            db["schema_version"].insert({"version": number, "applied_at": _now()})

    def _unreadable(self, error: sqlite3.DatabaseError) -> UnusableDatabase:
        return UnusableDatabase(f"{self.path} is not a readable SQLite database ({error}); "
                                "move it aside or pass another path")

    def _refuse_newer(self, version: int) -> None:
        if version > len(MIGRATIONS):
            raise UnusableDatabase(
                f"{self.path} has schema version {version} but this code knows only up to "
                f"{len(MIGRATIONS)}; update the code before opening it")

    def schema_version(self) -> int:
        with self._connect() as db:
            return _version(db)

    def add_prompt(self, text: str, category: str | None = None) -> int:
        """Return the id of prompt ``text``, adding it if new; an existing prompt keeps its category."""
        with self._write() as db:
            return _prompt_id(db, text, category)

    def add_round(self, config: dict[str, Any], phase: str = "generate") -> int:
        """Start the next round (ids count 1, 2, 3, ...) and keep the config that produced it."""
        with self._write() as db:
            return db["rounds"].insert({"phase": phase, "created_at": _now(),
                                        "config": json.dumps(config, sort_keys=True)}).last_pk

    def set_phase(self, round_id: int, phase: str) -> None:
        with self._write() as db:
            if db.execute("UPDATE rounds SET phase = ? WHERE id = ?", [phase, round_id]).rowcount == 0:
                raise NotFound(f"round {round_id} does not exist")

    def set_round_config(self, round_id: int, config: dict[str, Any]) -> None:
        """Replace a round's stored config (``python -m rlhf.round reconfigure``); its images and labels stay."""
        with self._write() as db:
            if db.execute("UPDATE rounds SET config = ? WHERE id = ?",
                          [json.dumps(config, sort_keys=True), round_id]).rowcount == 0:
                raise NotFound(f"round {round_id} does not exist")

    def rounds(self) -> list[Round]:
        """Every round, oldest first, with its phase and the config that produced it."""
        with self._connect() as db:
            return [Round(r["id"], r["phase"], json.loads(r["config"]), r["created_at"])
                    for r in db.query("SELECT * FROM rounds ORDER BY id")]

    def images(self, round_id: int | None = None) -> list[StoredImage]:
        """Images of one round (or all), oldest first."""
        with self._connect() as db:
            return [StoredImage(r["id"], r["path"], r["text"], r["round_id"], r["seed"], r["model_id"])
                    for r in db.query("SELECT i.id, i.path, pr.text, i.round_id, i.seed, i.model_id FROM images i "
                                      "JOIN prompts pr ON pr.id = i.prompt_id WHERE (:round IS NULL OR i.round_id = :round) "
                                      "ORDER BY i.id", {"round": round_id})]

    def pairs(self, round_id: int | None = None) -> list[Pair]:
        """Queued pairs of one round (or all), oldest first."""
        with self._connect() as db:
            return [Pair(r["id"], r["round_id"], r["image_a"], r["image_b"], r["selection"])
                    for r in db.query("SELECT id, round_id, image_a, image_b, selection FROM pairs "
                                      "WHERE (:round IS NULL OR round_id = :round) ORDER BY id", {"round": round_id})]

    def add_image(self, path: str | Path, prompt: str | int, round_id: int, seed: int | None,
                  model_id: str, sha256: str) -> int:
        """Record a generated image (``prompt`` is its text or id; ``path`` is relative to the data
        folder). Idempotent on ``sha256``, so re-running generation never duplicates images."""
        with self._write() as db:
            return _add_image(db, path, prompt, round_id, seed, model_id, sha256)

    def queue_pair(self, image_a: int, image_b: int, selection: str = "random",
                   round_id: int | None = None) -> int:
        """Queue two images of one prompt for comparison (in the later of their rounds unless
        ``round_id`` is given); queuing the same pair again returns its id."""
        with self._write() as db:
            return _queue_pair(db, image_a, image_b, selection, round_id)

    def queue_pairs(self, pairs: Iterable[tuple[int, int]], selection: str = "random",
                    round_id: int | None = None) -> list[int]:
        """Queue many pairs in one transaction: all of them or, on any error, none."""
        with self._write() as db:
            return [_queue_pair(db, a, b, selection, round_id) for a, b in pairs]

    def claim_next_pair(self, labeller: str, round_id: int | None = None) -> PairToLabel | None:
        """The pair ``labeller`` should judge next, or None once they have labelled every pair.

        Their open claim comes back until they label it, as Streamlit asks again on every rerun.
        Otherwise the pair with the fewest labels plus live claims of others wins, so every pair
        gets one label before any gets a second. Which image is shown left is fixed per
        (pair, labeller) and balanced across both.
        """
        with self._write(durable=False) as db:
            me = _labeller_id(db, labeller)
            params = {"me": me, "round": round_id, "cutoff": _now(-CLAIM_TTL)}
            for query in (_OPEN_CLAIM, _UNTOUCHED_PAIR, _LEAST_LOADED_PAIR):  # cheapest first
                found = db.execute(query, params).fetchone()
                if found:
                    break
            else:
                return None
            _claim(db, found[0], me)
            return _pair_to_label(db, found[0], labeller)

    def record_label(self, pair_id: int, labeller: str, choice: str, left_image: int,
                     response_ms: int | None = None) -> int:
        """Store one judgement with the image that was shown left; refuse rather than overwrite."""
        if choice not in CHOICES:
            raise InvalidValue(_one_of("choice", choice, CHOICES))
        with self._write() as db:
            return _insert_label(db, pair_id, labeller, choice, left_image, response_ms, _now())

    def undo_last_label(self, labeller: str) -> Label | None:
        """Remove ``labeller``'s most recent label and hand its pair back to them next.

        Returns the removed label, or None when they have none; other labellers are untouched.
        """
        with self._write() as db:
            last = _labels(db, "u.name = ? ORDER BY l.id DESC LIMIT 1", [labeller])
            if not last:
                return None
            db.execute("DELETE FROM labels WHERE id = ?", [last[0].id])
            _claim(db, last[0].pair_id, _labeller_id(db, labeller))
            return last[0]

    def progress(self, labeller: str, round_id: int | None = None) -> Progress:
        """Labels ``labeller`` has given, and pairs still waiting for them."""
        with self._connect() as db:
            row = db.execute(
                "WITH me AS (SELECT id FROM labellers WHERE name = :name) SELECT "
                "(SELECT count(*) FROM labels l JOIN pairs p ON p.id = l.pair_id WHERE "
                " l.labeller_id = (SELECT id FROM me) AND (:round IS NULL OR p.round_id = :round)), "
                "(SELECT count(*) FROM pairs p WHERE (:round IS NULL OR p.round_id = :round) AND NOT EXISTS "
                " (SELECT 1 FROM labels l WHERE l.pair_id = p.id AND l.labeller_id = (SELECT id FROM me)))",
                {"name": labeller, "round": round_id}).fetchone()
            return Progress(*row)

    def labels(self, round_id: int | None = None) -> list[Label]:
        """Every label, 'both_bad' and 'skip' included, oldest first."""
        with self._connect() as db:
            return _labels(db, "(:round IS NULL OR p.round_id = :round) ORDER BY l.id", {"round": round_id})

    def preferences(self, round_id: int | None = None) -> list[Preference]:
        """Labels the reward model can learn from: left/right resolved to images, ties flagged.

        'both_bad' and 'skip' say nothing about which image is better, so they stay out.
        """
        with self._connect() as db:
            rows = db.query(
                "SELECT l.id, l.pair_id, p.round_id, u.name, pr.text, l.choice, li.id AS left_id, "
                "li.path AS left_path, ri.id AS right_id, ri.path AS right_path "
                "FROM labels l JOIN pairs p ON p.id = l.pair_id JOIN labellers u ON u.id = l.labeller_id "
                "JOIN prompts pr ON pr.id = p.prompt_id JOIN images li ON li.id = l.left_image "
                "JOIN images ri ON ri.id = p.image_a + p.image_b - l.left_image "
                "WHERE l.choice IN ('left', 'right', 'tie') AND (:round IS NULL OR p.round_id = :round) "
                "ORDER BY l.id", {"round": round_id})
            preferences = []
            for r in rows:
                left, right = (r["left_id"], r["left_path"]), (r["right_id"], r["right_path"])
                (winner, winner_path), (loser, loser_path) = (right, left) if r["choice"] == "right" else (left, right)
                preferences.append(Preference(r["id"], r["pair_id"], r["round_id"], r["name"], r["text"],
                                              winner, loser, winner_path, loser_path, r["choice"] == "tie"))
            return preferences

    def agreement(self, round_id: int | None = None) -> Agreement:
        """Percent agreement and Cohen's kappa over every two labellers who judged the same pair
        ('skip' excluded), compared in image order so the side each person saw does not matter.

        Kappa is computed here, with the formula of sklearn.metrics.cohen_kappa_score, to spare
        the Streamlit app a scikit-learn import; it is None when chance agreement is total.
        """
        by_pair: dict[int, list[Label]] = defaultdict(list)
        for label in self.labels(round_id):
            if label.judgement is not None:
                by_pair[label.pair_id].append(label)
        first: list[str | None] = []
        second: list[str | None] = []
        for labels in by_pair.values():
            for x, y in combinations(sorted(labels, key=lambda label: label.labeller), 2):
                first.append(x.judgement)
                second.append(y.judgement)
        if not first:
            return Agreement(0, None, None)
        n = len(first)
        observed = sum(x == y for x, y in zip(first, second)) / n
        counts_1, counts_2 = Counter(first), Counter(second)
        expected = sum(counts_1[k] * counts_2[k] for k in counts_1) / n**2
        kappa = None if expected == 1 else (observed - expected) / (1 - expected)
        return Agreement(n, 100 * observed, kappa)

    def check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign key checks; empty when healthy."""
        with self._connect() as db:
            try:
                problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
                problems += [f"{table} row {rowid} points to a missing {parent} row" for table, rowid, parent, _
                             in db.execute("PRAGMA foreign_key_check").fetchall()]
            except sqlite3.DatabaseError as e:
                problems = [f"{self.path}: {e}"]
            return problems

    def export(self, out: str | Path) -> int:
        """Write every label as a Pick-a-Pic-style row to ``out`` (.jsonl, or .parquet with pyarrow)
        and return the row count. image_0/image_1 are in pair order and shown_left says which of them
        was on the left; 'both_bad' and 'skip' carry label_0 = label_1 = 0 and has_label 0. The extra
        columns (uids are sha256s) let :meth:`import_labels` rebuild the store losslessly."""
        with self._connect() as db:
            rows = [_exchange_row(r) for r in db.query(
                "SELECT pr.text AS caption, a.path AS image_0, b.path AS image_1, u.name AS user_id, "
                "l.created_at, a.model_id AS model_0, b.model_id AS model_1, l.id AS ranking_id, "
                "a.sha256 AS image_0_uid, b.sha256 AS image_1_uid, a.seed AS seed_0, b.seed AS seed_1, "
                "p.round_id, p.selection, pr.category, l.choice, l.left_image = b.id AS shown_left, "
                "l.response_ms FROM labels l JOIN pairs p ON p.id = l.pair_id "
                "JOIN prompts pr ON pr.id = p.prompt_id JOIN images a ON a.id = p.image_a "
                "JOIN images b ON b.id = p.image_b JOIN labellers u ON u.id = l.labeller_id ORDER BY l.id")]
        _write_rows(Path(out), rows)
        return len(rows)

    def import_labels(self, source: str | Path) -> ImportReport:
        """Merge rows written by :meth:`export` in one transaction: all rows or, on error, none.

        Idempotent: prompts, images, pairs and labels already present are reused, and a label
        the store already holds differently is kept as it is and counted as a conflict.
        """
        rows = read_rows(Path(source))
        outcomes: Counter[str] = Counter()
        with self._write() as db:
            for number, row in enumerate(rows, start=1):
                try:
                    outcomes[_import_row(db, row)] += 1
                except (StoreError, ValueError, TypeError) as e:
                    raise StoreError(f"{source} row {number}: {e}") from None
        return ImportReport(outcomes["added"], outcomes["unchanged"], outcomes["conflict"])


def _now(offset: timedelta = timedelta()) -> str:
    return (datetime.now(timezone.utc) + offset).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_of(what: str, value: object, allowed: tuple[str, ...]) -> str:
    return f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}"


def _version(db: Database) -> int:
    return db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0


def _require(db: Database, table: str, id_: int, what: str) -> None:
    if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [id_]).fetchone() is None:
        raise NotFound(f"{what} {id_} does not exist")


def _prompt_id(db: Database, text: str, category: str | None = None) -> int:
    if not text.strip():
        raise InvalidValue("a prompt needs text")
    db.execute("INSERT INTO prompts (text, category) VALUES (?, ?) ON CONFLICT (text) DO NOTHING",
               [text, category])
    return db.execute("SELECT id FROM prompts WHERE text = ?", [text]).fetchone()[0]


def _labeller_id(db: Database, name: str) -> int:
    if not name.strip():
        raise InvalidValue("a labeller needs a name")
    db.execute("INSERT INTO labellers (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
               [name, _now()])
    return db.execute("SELECT id FROM labellers WHERE name = ?", [name]).fetchone()[0]


def _claim(db: Database, pair_id: int, labeller_id: int) -> None:
    db.execute("INSERT INTO claims (pair_id, labeller_id, claimed_at) VALUES (?, ?, ?) "
               "ON CONFLICT (pair_id, labeller_id) DO UPDATE SET claimed_at = excluded.claimed_at",
               [pair_id, labeller_id, _now()])


def _add_image(db: Database, path: str | Path, prompt: str | int, round_id: int, seed: int | None,
               model_id: str, sha256: str) -> int:
    relative = PurePosixPath(Path(path).as_posix())
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise InvalidValue(f"image path {str(path)!r} must be relative to the data folder")
    if not _SHA256.fullmatch(sha256):
        raise InvalidValue(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    existing = db.execute("SELECT id FROM images WHERE sha256 = ?", [sha256]).fetchone()
    if existing:
        return existing[0]
    if db.execute("SELECT 1 FROM images WHERE path = ?", [str(relative)]).fetchone():
        raise ImageConflict(f"{relative} is already recorded with other content; save new images to new paths")
    prompt_id = _prompt_id(db, prompt) if isinstance(prompt, str) else prompt
    _require(db, "prompts", prompt_id, "prompt")
    _require(db, "rounds", round_id, "round")
    return db["images"].insert({"path": str(relative), "prompt_id": prompt_id, "round_id": round_id,
                                "seed": seed, "model_id": model_id, "sha256": sha256,
                                "created_at": _now()}).last_pk


def _queue_pair(db: Database, image_a: int, image_b: int, selection: str, round_id: int | None) -> int:
    if selection not in SELECTIONS:
        raise InvalidValue(_one_of("selection", selection, SELECTIONS))
    a, b = sorted((image_a, image_b))
    if a == b:
        raise InvalidValue(f"a pair needs two different images, got image {a} twice")
    images = {r["id"]: r for r in db.query("SELECT id, prompt_id, round_id FROM images WHERE id IN (?, ?)", [a, b])}
    for image in (a, b):
        if image not in images:
            raise NotFound(f"image {image} does not exist")
    if images[a]["prompt_id"] != images[b]["prompt_id"]:
        raise PromptMismatch(f"images {a} and {b} show different prompts "
                             f"({images[a]['prompt_id']} and {images[b]['prompt_id']}); pair images of one prompt")
    round_id = max(images[a]["round_id"], images[b]["round_id"]) if round_id is None else round_id
    _require(db, "rounds", round_id, "round")
    existing = db.execute("SELECT id FROM pairs WHERE round_id = ? AND image_a = ? AND image_b = ?",
                          [round_id, a, b]).fetchone()
    if existing:
        return existing[0]
    return db["pairs"].insert({"prompt_id": images[a]["prompt_id"], "round_id": round_id, "image_a": a,
                               "image_b": b, "selection": selection, "created_at": _now()}).last_pk


def _pair_to_label(db: Database, pair_id: int, labeller: str) -> PairToLabel:
    round_id, selection, prompt, *images = db.execute(
        "SELECT p.round_id, p.selection, pr.text, a.id, a.path, a.model_id, a.seed, b.id, b.path, b.model_id, "
        "b.seed FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id JOIN images a ON a.id = p.image_a "
        "JOIN images b ON b.id = p.image_b WHERE p.id = ?", [pair_id]).fetchone()
    a, b = Image(*images[:4]), Image(*images[4:])
    a_on_left = hashlib.sha256(f"{pair_id}/{labeller}".encode()).digest()[0] % 2 == 0
    left, right = (a, b) if a_on_left else (b, a)
    return PairToLabel(pair_id, round_id, prompt, selection, left, right)


def _insert_label(db: Database, pair_id: int, labeller: str, choice: str, left_image: int,
                  response_ms: int | None, created_at: str) -> int:
    pair = db.execute("SELECT image_a, image_b FROM pairs WHERE id = ?", [pair_id]).fetchone()
    if pair is None:
        raise NotFound(f"pair {pair_id} does not exist")
    if left_image not in pair:
        raise InvalidValue(f"image {left_image} is not in pair {pair_id} (images {pair[0]} and {pair[1]})")
    if response_ms is not None and response_ms < 0:
        raise InvalidValue(f"response_ms must not be negative, got {response_ms}")
    labeller_id = _labeller_id(db, labeller)
    if db.execute("SELECT 1 FROM labels WHERE pair_id = ? AND labeller_id = ?", [pair_id, labeller_id]).fetchone():
        raise AlreadyLabelled(f"{labeller} already labelled pair {pair_id}; undo that label to change it")
    label_id = db.execute(  # plain SQL: every label runs this under the write lock
        "INSERT INTO labels (pair_id, labeller_id, choice, left_image, created_at, response_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)", [pair_id, labeller_id, choice, left_image, created_at, response_ms]).lastrowid
    db.execute("DELETE FROM claims WHERE pair_id = ? AND labeller_id = ?", [pair_id, labeller_id])
    return label_id


def _labels(db: Database, where: str, params: list[Any] | dict[str, Any]) -> list[Label]:
    return [Label(*row) for row in db.execute(
        "SELECT l.id, l.pair_id, p.round_id, u.name, l.choice, l.left_image, "
        "p.image_a + p.image_b - l.left_image, l.response_ms, l.created_at "
        "FROM labels l JOIN pairs p ON p.id = l.pair_id JOIN labellers u ON u.id = l.labeller_id "
        f"WHERE {where}", params).fetchall()]


def _exchange_row(r: dict[str, Any]) -> dict[str, Any]:
    """Add Pick-a-Pic's label columns: 1/0 for the winner, 0.5/0.5 for a tie, 0/0 when neither won."""
    if r["choice"] == "tie":
        label_0, label_1 = 0.5, 0.5
    elif r["choice"] in ("left", "right"):
        image_0_won = (r["choice"] == "left") != bool(r["shown_left"])
        label_0, label_1 = int(image_0_won), int(not image_0_won)
    else:
        label_0 = label_1 = 0
    head = {"caption": r["caption"], "image_0": r["image_0"], "image_1": r["image_1"], "label_0": label_0,
            "label_1": label_1}  # Pick-a-Pic's own columns first
    return {**head, **r, "has_label": int(r["choice"] in PREFERENCE_CHOICES)}


def _import_row(db: Database, row: dict[str, Any]) -> str:
    missing = [column for column in IMPORT_COLUMNS if row.get(column) is None]
    if missing:
        raise InvalidValue(f"missing {', '.join(missing)}")
    round_id = int(row["round_id"])
    db.execute("INSERT INTO rounds (id, phase, created_at, config) VALUES (?, 'imported', ?, '{}') "
               "ON CONFLICT (id) DO NOTHING", [round_id, _now()])
    prompt_id = _prompt_id(db, str(row["caption"]), row.get("category"))
    image_0, image_1 = (_add_image(db, row[f"image_{i}"], prompt_id, round_id, row.get(f"seed_{i}"),
                                   str(row[f"model_{i}"]), str(row[f"image_{i}_uid"])) for i in (0, 1))
    pair_id = _queue_pair(db, image_0, image_1, row.get("selection") or "random", round_id)
    left = image_1 if row.get("shown_left") else image_0
    choice = row.get("choice") or _choice_from_labels(float(row["label_0"]), float(row["label_1"]), left == image_0)
    if choice not in CHOICES:
        raise InvalidValue(_one_of("choice", choice, CHOICES))
    held = db.execute("SELECT l.choice, l.left_image FROM labels l JOIN labellers u ON u.id = l.labeller_id "
                      "WHERE l.pair_id = ? AND u.name = ?", [pair_id, str(row["user_id"])]).fetchone()
    if held:
        return "unchanged" if tuple(held) == (choice, left) else "conflict"
    _insert_label(db, pair_id, str(row["user_id"]), choice, left, row.get("response_ms"), str(row["created_at"]))
    return "added"


def _choice_from_labels(label_0: float, label_1: float, image_0_left: bool) -> str:
    if label_0 == label_1 == 0.5:
        return "tie"
    if {label_0, label_1} == {0.0, 1.0}:
        return "left" if (label_0 == 1.0) == image_0_left else "right"
    raise InvalidValue(f"label_0/label_1 of {label_0}/{label_1} need a choice column")


def _write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write beside ``out`` and rename, so a failed export never leaves a half-written file."""
    partial = out.with_name(out.name + ".partial")
    try:
        if out.suffix == ".parquet":
            try:
                import pyarrow
                import pyarrow.parquet
            except ImportError:
                raise StoreError("writing .parquet needs pyarrow (pip install pyarrow); export to .jsonl instead") from None
            pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), partial)
        else:
            with partial.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def read_rows(source: Path) -> list[dict[str, Any]]:
    """The rows of a Pick-a-Pic-style .jsonl or .parquet file (``export``'s format, or a public preference set)."""
    if not source.is_file():
        raise NotFound(f"{source} does not exist")
    if source.suffix == ".parquet":
        try:
            import pyarrow.parquet
        except ImportError:
            raise StoreError("reading .parquet needs pyarrow (pip install pyarrow); use a .jsonl file instead") from None
        return pyarrow.parquet.read_table(source).to_pylist()
    rows = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise StoreError(f"{source} line {number} is not JSON ({e})") from None
            if not isinstance(row, dict):
                raise StoreError(f"{source} line {number} is not a JSON object")
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    examples = {"check": "python -m rlhf.store check data/runs/labels.db",
                "export": "python -m rlhf.store export data/runs/labels.db labels.jsonl",
                "import": "python -m rlhf.store import data/runs/labels.db their_labels.jsonl"}
    parser = argparse.ArgumentParser(prog="python -m rlhf.store", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Check, export or import a label store. Labels travel as Pick-a-Pic "
                                                 "rows (caption, image_0, image_1, label_0, label_1, user_id, ...).\n\n"
                                                 + "\n".join(f"  {e}" for e in examples.values()))
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"check": "run SQLite's integrity and foreign key checks",
             "export": "write every label to .jsonl (or .parquet, with pyarrow installed)",
             "import": "merge labels from .jsonl or .parquet; idempotent, and never overwrites a stored label"}
    sub = {name: commands.add_parser(name, help=text, description=f"{text}.\n\nExample: {examples[name]}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
           for name, text in helps.items()}
    for name, command in sub.items():
        command.add_argument("db", help="the label store, e.g. data/runs/labels.db" + (" (made if missing)" if name == "import" else ""))
    sub["export"].add_argument("out", help="file to write, e.g. labels.jsonl or labels.parquet")
    sub["import"].add_argument("source", help="file to read, e.g. their_labels.jsonl")
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            Path(args.db).parent.mkdir(parents=True, exist_ok=True)
        store = Store(args.db, create=args.command == "import")
        if args.command == "check":
            problems = store.check()
            for problem in problems:
                print(f"{args.db}: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"{args.db}: ok (schema version {store.schema_version()}, {len(store.labels())} labels)")
        elif args.command == "export":
            print(f"exported {store.export(args.out)} labels to {args.out}")
        else:
            report = store.import_labels(args.source)
            print(f"imported {report.added} labels from {args.source} ({report.unchanged} already present, "
                  f"{report.conflicts} conflicting with stored labels, which were kept)")
    except (StoreError, sqlite3.Error, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
