"""Queueing pairs, handing them to labellers, and keeping every label they give."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from rlhf.store import (CHOICES, AlreadyLabelled, ImageConflict, InvalidValue, Label, PairToLabel,
                        PromptMismatch, Store)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "labels.db")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def queue(store: Store, n_pairs: int, prompt: str = "a red cube") -> list[int]:
    """Queue ``n_pairs`` pairs of fresh images of ``prompt`` in a new round."""
    round_id = store.add_round({"guidance": 7.5})
    images = [store.add_image(f"r{round_id}/{prompt}/{i}.png", prompt, round_id, i, "base", sha(f"{prompt}/{round_id}/{i}"))
              for i in range(2 * n_pairs)]
    return store.queue_pairs(zip(images[::2], images[1::2]))


def images_of(store: Store, pair_id: int) -> tuple[int, int]:
    with store._connect() as db:
        return db.execute("SELECT image_a, image_b FROM pairs WHERE id = ?", [pair_id]).fetchone()


def test_each_choice_is_stored_with_shown_order_when_recorded(store: Store) -> None:
    pair_ids = queue(store, len(CHOICES))
    shown = {}
    for pair_id, choice in zip(pair_ids, CHOICES):
        a, b = images_of(store, pair_id)
        left = b if pair_id % 2 else a  # both orders occur
        shown[pair_id] = (choice, left, a + b - left)
        store.record_label(pair_id, "ann", choice, left, response_ms=900 + pair_id)
    labels = store.labels()
    assert {label.pair_id: (label.choice, label.left_image, label.right_image) for label in labels} == shown
    assert [label.response_ms for label in labels] == [900 + pair_id for pair_id in pair_ids]


def test_record_label_rejects_unknown_choice_with_allowed_list(store: Store) -> None:
    [pair_id] = queue(store, 1)
    with pytest.raises(InvalidValue) as error:
        store.record_label(pair_id, "ann", "meh", images_of(store, pair_id)[0])
    assert str(error.value) == "unknown choice 'meh'; expected one of: left, right, tie, both_bad, skip"
    assert store.labels() == []


def test_record_label_refuses_second_label_when_same_labeller_repeats(store: Store) -> None:
    [pair_id] = queue(store, 1)
    a, b = images_of(store, pair_id)
    store.record_label(pair_id, "ann", "left", a)
    with pytest.raises(AlreadyLabelled, match="ann already labelled pair"):
        store.record_label(pair_id, "ann", "right", b)
    assert [(label.choice, label.left_image) for label in store.labels()] == [("left", a)]


def test_record_label_rejects_left_image_when_not_in_pair(store: Store) -> None:
    first, second = queue(store, 2)
    with pytest.raises(InvalidValue, match="is not in pair"):
        store.record_label(first, "ann", "left", images_of(store, second)[0])


def test_stored_label_refuses_update_when_written_with_raw_sql(store: Store) -> None:
    [pair_id] = queue(store, 1)
    store.record_label(pair_id, "ann", "left", images_of(store, pair_id)[0])
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.DatabaseError, match="immutable"):
        con.execute("UPDATE labels SET choice = 'right'")
    assert store.labels()[0].choice == "left"


def test_claim_skips_pair_for_labeller_who_labelled_it_while_second_labeller_gets_it(store: Store) -> None:
    [pair_id] = queue(store, 1)
    pair = store.claim_next_pair("ann")
    assert pair is not None and pair.pair_id == pair_id
    store.record_label(pair_id, "ann", "tie", pair.left.id)
    assert store.claim_next_pair("ann") is None
    second = store.claim_next_pair("bob")
    assert second is not None and second.pair_id == pair_id


def test_claim_covers_every_pair_before_overlap_when_labellers_work_at_once(store: Store) -> None:
    pair_ids = queue(store, 3)
    claimed = [store.claim_next_pair(name) for name in ("ann", "bob", "cid")]
    assert sorted(pair.pair_id for pair in claimed if pair) == pair_ids


def test_claim_returns_same_pair_when_asked_again_before_labelling(store: Store) -> None:
    queue(store, 3)
    first = store.claim_next_pair("ann")
    assert first is not None
    assert Store(store.path).claim_next_pair("ann") == first


def test_claim_shows_sides_deterministically_and_balanced_when_many_pairs(store: Store) -> None:
    pair_ids = queue(store, 40)
    a_on_left = 0
    for pair_id in pair_ids:
        pair = store.claim_next_pair("ann")
        assert isinstance(pair, PairToLabel) and pair.pair_id == pair_id
        assert pair.left.path != pair.right.path and pair.prompt == "a red cube"
        a_on_left += pair.left.id < pair.right.id
        store.record_label(pair_id, "ann", "skip", pair.left.id)
    assert 10 <= a_on_left <= 30
    again = store.undo_last_label("ann")
    assert again is not None and store.claim_next_pair("ann").left.id == again.left_image


def test_claim_returns_none_when_queue_is_empty(store: Store) -> None:
    assert store.claim_next_pair("ann") is None
    queue(store, 1)
    assert store.claim_next_pair("ann", round_id=99) is None


def test_undo_removes_only_last_label_of_that_labeller(store: Store) -> None:
    first, second = queue(store, 2)
    store.record_label(first, "ann", "left", images_of(store, first)[0])
    store.record_label(second, "ann", "right", images_of(store, second)[0])
    store.record_label(first, "bob", "tie", images_of(store, first)[1])
    undone = store.undo_last_label("ann")
    assert isinstance(undone, Label) and (undone.pair_id, undone.labeller, undone.choice) == (second, "ann", "right")
    assert sorted((label.pair_id, label.labeller) for label in store.labels()) == [(first, "ann"), (first, "bob")]
    assert store.claim_next_pair("ann").pair_id == second  # the undone pair comes back to be labelled again


def test_undo_returns_none_when_labeller_has_no_labels(store: Store) -> None:
    [pair_id] = queue(store, 1)
    store.record_label(pair_id, "bob", "left", images_of(store, pair_id)[0])
    assert store.undo_last_label("ann") is None
    assert len(store.labels()) == 1


def test_progress_counts_labelled_and_queued_per_labeller(store: Store) -> None:
    first, second, third = queue(store, 3)
    store.record_label(first, "ann", "left", images_of(store, first)[0])
    store.record_label(second, "ann", "left", images_of(store, second)[0])
    assert store.progress("ann") == (2, 1)
    assert store.progress("bob") == (0, 3)
    queue(store, 1)
    assert store.progress("ann", round_id=1) == (2, 1) and store.progress("ann", round_id=2) == (0, 1)


def test_preferences_resolve_left_right_to_images_and_mark_ties(store: Store) -> None:
    first, second, third = queue(store, 3)
    a1, b1 = images_of(store, first)
    a2, b2 = images_of(store, second)
    a3, b3 = images_of(store, third)
    store.record_label(first, "ann", "left", b1)  # b1 was on the left and won
    store.record_label(second, "ann", "right", b2)  # a2 was on the right and won
    store.record_label(third, "ann", "tie", a3)
    found = {p.pair_id: (p.winner_image, p.loser_image, p.tie) for p in store.preferences()}
    assert found == {first: (b1, a1, False), second: (a2, b2, False), third: (a3, b3, True)}
    paths = {p.pair_id: (p.winner_path, p.loser_path) for p in store.preferences()}
    assert paths[first] == ("r1/a red cube/1.png", "r1/a red cube/0.png")


def test_preferences_exclude_both_bad_and_skip_which_labels_keep(store: Store) -> None:
    first, second, third = queue(store, 3)
    store.record_label(first, "ann", "both_bad", images_of(store, first)[0])
    store.record_label(second, "ann", "skip", images_of(store, second)[0])
    store.record_label(third, "ann", "right", images_of(store, third)[0])
    assert [label.choice for label in store.labels()] == ["both_bad", "skip", "right"]
    assert [p.pair_id for p in store.preferences()] == [third]


def test_agreement_matches_hand_computed_kappa_when_labellers_saw_opposite_sides(store: Store) -> None:
    pair_ids = queue(store, 6)
    ann = ["a", "a", "b", "tie", "a", "skip"]  # judgements in image order
    bob = ["a", "b", "b", "tie", "b", "a"]
    for pair_id, ann_says, bob_says in zip(pair_ids, ann, bob):
        a, b = images_of(store, pair_id)
        for name, says, left in (("ann", ann_says, a), ("bob", bob_says, b)):  # ann saw a left, bob saw b left
            choice = {"a": "left" if left == a else "right", "b": "left" if left == b else "right"}.get(says, says)
            store.record_label(pair_id, name, choice, left)
    agreement = store.agreement()
    # skip excluded: 5 comparisons, 3 agree. Chance: ann a3 b1 tie1, bob a1 b3 tie1 -> (3+3+1)/25.
    assert agreement.comparisons == 5
    assert agreement.percent == pytest.approx(60.0)
    assert agreement.kappa == pytest.approx((0.6 - 7 / 25) / (1 - 7 / 25))


def test_agreement_is_undefined_when_no_pair_has_two_labels(store: Store) -> None:
    [pair_id] = queue(store, 1)
    store.record_label(pair_id, "ann", "left", images_of(store, pair_id)[0])
    assert store.agreement().comparisons == 0 and store.agreement().kappa is None


def test_queue_pair_rejects_images_when_prompts_differ(store: Store) -> None:
    round_id = store.add_round({})
    cube = store.add_image("r1/cube.png", "a red cube", round_id, 0, "base", sha("cube"))
    cat = store.add_image("r1/cat.png", "a cat", round_id, 0, "base", sha("cat"))
    with pytest.raises(PromptMismatch, match="different prompts"):
        store.queue_pair(cube, cat)


def test_queue_pair_returns_existing_id_when_queued_again_in_either_order(store: Store) -> None:
    [pair_id] = queue(store, 1)
    a, b = images_of(store, pair_id)
    assert store.queue_pair(b, a) == store.queue_pair(a, b, selection="active") == pair_id


def test_add_image_returns_existing_id_when_sha256_repeats(store: Store) -> None:
    round_id = store.add_round({})
    first = store.add_image("r1/0.png", "a cat", round_id, 0, "base", sha("0"))
    assert store.add_image("r1/0.png", "a cat", round_id, 0, "base", sha("0")) == first


def test_add_image_refuses_reused_path_when_content_differs(store: Store) -> None:
    round_id = store.add_round({})
    store.add_image("r1/0.png", "a cat", round_id, 0, "base", sha("0"))
    with pytest.raises(ImageConflict):
        store.add_image("r1/0.png", "a cat", round_id, 1, "base", sha("1"))


def test_add_image_rejects_path_when_not_relative_to_data_folder(store: Store) -> None:
    round_id = store.add_round({})
    for bad in ("/tmp/0.png", "../0.png"):
        with pytest.raises(InvalidValue, match="relative to the data folder"):
            store.add_image(bad, "a cat", round_id, 0, "base", sha(bad))
