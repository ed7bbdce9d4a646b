"""Many labelling processes and threads at once, and a writer killed mid-transaction."""
from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import BrokenBarrierError

import pytest

from rlhf.store import Store

PROCESSES = 8
LABELS_EACH = 200


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "labels.db")


def queue(store: Store, n_pairs: int, prompts: int = 25, images_per_prompt: int = 16) -> list[int]:
    """Queue ``n_pairs`` pairs drawn from all pairs of a few images per prompt (fewer images to add)."""
    round_id = store.add_round({})
    pairs = []
    for p in range(prompts):
        images = [store.add_image(f"r{round_id}/p{p}/{i}.png", f"prompt {p}", round_id, i, "base",
                                  hashlib.sha256(f"{p}/{i}".encode()).hexdigest()) for i in range(images_per_prompt)]
        pairs += itertools.combinations(images, 2)
    assert len(pairs) >= n_pairs
    return store.queue_pairs(pairs[:n_pairs])


def label_pairs(path: str, labeller: str, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    store = Store(path)
    barrier.wait(timeout=120)
    label_shared(store, labeller, count)


def label_shared(store: Store, labeller: str, count: int) -> None:
    for _ in range(count):
        pair = store.claim_next_pair(labeller)
        store.record_label(pair.pair_id, labeller, "left", pair.left.id, response_ms=700)


def label_until_killed(path: str, log: str) -> None:
    """Label forever (a new labeller name once the queue is done), logging each id after its commit."""
    store = Store(path)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for round_ in itertools.count():
        labeller = f"bob{round_}"
        while (pair := store.claim_next_pair(labeller)) is not None:
            label_id = store.record_label(pair.pair_id, labeller, "right", pair.left.id, response_ms=5)
            os.write(log_fd, f"{label_id}\n".encode())


def test_parallel_labellers_store_each_label_exactly_once_when_8_processes_write(store: Store) -> None:
    total = PROCESSES * LABELS_EACH
    pair_ids = queue(store, total, prompts=1, images_per_prompt=58)
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES + 1)
    workers = [spawn.Process(target=label_pairs, args=(str(store.path), f"labeller{i}", LABELS_EACH, barrier))
               for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
        started = time.perf_counter()
    except BrokenBarrierError:
        pytest.fail("a labelling process did not start")
    finally:
        for worker in workers:
            worker.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    labels = store.labels()
    assert len(labels) == total
    assert len({(label.pair_id, label.labeller) for label in labels}) == total
    assert sorted(label.pair_id for label in labels) == pair_ids  # coverage before overlap: each pair once
    assert set(Counter(label.labeller for label in labels).values()) == {LABELS_EACH}
    assert store.check() == []
    print(f"\n{total} labels by {PROCESSES} processes in {elapsed:.1f} s: {total / elapsed:.0f} labels/s "
          "(claim + record, two write transactions per label)")


def test_threads_sharing_one_store_keep_every_label_when_labelling_at_once(store: Store) -> None:
    queue(store, 100, prompts=1, images_per_prompt=15)
    names = [f"thread{i}" for i in range(4)]
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: label_shared(store, name, 25), names))
    labels = store.labels()
    assert len({label.pair_id for label in labels}) == len(labels) == 100 and store.check() == []


def test_committed_labels_survive_when_writer_is_killed_mid_loop(store: Store, tmp_path: Path) -> None:
    queue(store, 60, prompts=6, images_per_prompt=5)
    for _ in range(5):
        pair = store.claim_next_pair("ann")
        store.record_label(pair.pair_id, "ann", "tie", pair.left.id)
    before = store.labels()
    log = tmp_path / "committed.log"
    writer = multiprocessing.get_context("spawn").Process(target=label_until_killed, args=(str(store.path), str(log)))
    writer.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.read_bytes().count(b"\n") < 80):
        time.sleep(0.02)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(timeout=30)
    assert writer.exitcode == -signal.SIGKILL

    reopened = Store(store.path)
    assert reopened.check() == []
    committed = {int(line) for line in log.read_text().split("\n")[:-1]}  # the last piece may be cut short
    written = {label.id for label in reopened.labels() if label.labeller.startswith("bob")}
    assert len(committed) >= 80 and committed <= written and len(written - committed) <= 1
    assert [label for label in reopened.labels() if label.labeller == "ann"] == before
    pair = reopened.claim_next_pair("ann")  # the store still takes writes
    assert reopened.record_label(pair.pair_id, "ann", "left", pair.left.id) > max(written)
