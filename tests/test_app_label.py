"""The Label page under AppTest: choices, side order, undo, stale presses, empty queue, two labellers, refused
paths, token; and the app's settings."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from rlhf.store import CHOICES, PairToLabel
from test_app_toydata import ToyStore, make_toy_store

APP_DIR = Path(__file__).resolve().parent.parent / "app"
APP = str(APP_DIR / "label.py")
sys.path.insert(0, str(APP_DIR))  # as `streamlit run` does, for the unit tests of labelui below
from labelui import config as app_config  # noqa: E402
from labelui.config import AppConfig, round_command, rounds_to_run  # noqa: E402
from labelui.images import DISPLAY_PX, load_for_display  # noqa: E402
from rlhf.paths import DATA, ROOT, RUNS  # noqa: E402
from rlhf.store import Round  # noqa: E402

SHORTCUTS = {"left": "1", "right": "2", "tie": "3", "both_bad": "4", "skip": "5"}


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyStore:
    """Three queued pairs of toy drawings; the app's environment points at them."""
    toy = make_toy_store(tmp_path, n_pairs=3)
    for name, value in toy.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RLHF_APP_TOKEN", raising=False)
    return toy


def open_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()


def start(labeller: str) -> AppTest:
    """A fresh session that has given its name and shows its first pair."""
    at = open_app()
    at.text_input(key="labeller_input").input(labeller)
    at.button(key="labeller_submit").click().run()
    assert not at.exception
    return at


def shown(at: AppTest) -> PairToLabel | None:
    return at.session_state["desk"].pair


def round_hint(toy: ToyStore, rounds: int) -> str:
    return f"python -m rlhf.round run --rounds {rounds} --run-dir {toy.db.parent}"


def notices(at: AppTest) -> list[str]:
    """The captions on the page: the prompt's and the notice line under the buttons."""
    return [caption.value for caption in at.caption]


def choose(at: AppTest, choice: str) -> PairToLabel:
    """Press the ``choice`` button of the pair on screen; return that pair as it was shown."""
    pair = shown(at)
    at.button(key=f"choice_{choice}_{pair.pair_id}").click().run()
    assert not at.exception
    return pair


def test_app_imports_no_torch_when_run() -> None:
    before = "torch" in sys.modules
    open_app()
    assert before or "torch" not in sys.modules


@pytest.mark.parametrize("choice", CHOICES)
def test_choice_is_stored_with_shown_sides_when_clicked(toy: ToyStore, choice: str) -> None:
    at = start("ann")
    pair = choose(at, choice)
    [label] = toy.store.labels()
    assert (label.pair_id, label.labeller, label.choice) == (pair.pair_id, "ann", choice)
    assert (label.left_image, label.right_image) == (pair.left.id, pair.right.id)
    assert label.response_ms is not None and label.response_ms >= 0
    assert shown(at).pair_id != pair.pair_id  # the next pair is on screen


def test_buttons_carry_keys_1_to_5_when_pair_shown(toy: ToyStore) -> None:
    at = start("ann")
    pair_id = shown(at).pair_id
    assert {c: at.button(key=f"choice_{c}_{pair_id}").proto.shortcut for c in CHOICES} == SHORTCUTS
    assert at.button(key="undo").proto.shortcut == "u"  # Streamlit stores keys lower-case


def test_sides_are_stored_as_shown_when_both_orders_occur(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = make_toy_store(tmp_path, n_pairs=6)
    for name, value in toy.env().items():
        monkeypatch.setenv(name, value)
    at = start("ann")
    shown_left = {}
    for _ in toy.pair_ids:
        pair = choose(at, "left")
        shown_left[pair.pair_id] = pair.left.id
    stored = {label.pair_id: label.left_image for label in toy.store.labels()}
    assert stored == shown_left
    # the store randomises sides per pair and labeller: both orders were shown
    assert {left == min(pair_images(toy.db, pair_id)) for pair_id, left in shown_left.items()} == {True, False}
    assert {p.pair_id: p.winner_image for p in toy.store.preferences()} == shown_left  # 'left' won each time


def pair_images(db: Path, pair_id: int) -> tuple[int, int]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT image_a, image_b FROM pairs WHERE id = ?", [pair_id]).fetchone()


def test_small_image_is_upscaled_sharply_when_loaded(toy: ToyStore) -> None:
    png = next(toy.data.rglob("*.png"))
    pixels, small = load_for_display(png)
    assert small and pixels.size == (DISPLAY_PX, DISPLAY_PX)  # 32 px x 10
    with Image.open(png) as original:
        assert pixels.getpixel((DISPLAY_PX - 1, 0)) == original.convert("RGB").getpixel((31, 0))
        assert len(pixels.getcolors(maxcolors=1024)) == len(original.convert("RGB").getcolors())  # no blending


def test_large_image_is_kept_for_column_width_when_loaded(tmp_path: Path) -> None:
    Image.new("RGB", (512, 384), "navy").save(tmp_path / "big.png")
    pixels, small = load_for_display(tmp_path / "big.png")
    assert not small and pixels.size == (512, 384)


def test_prompt_is_plain_text_when_it_holds_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = make_toy_store(tmp_path, n_pairs=1)
    prompt = "**bold** <b>html</b> [link](http://example.com)"
    with sqlite3.connect(toy.db) as db:
        db.execute("UPDATE prompts SET text = ?", [prompt])
    for name, value in toy.env().items():
        monkeypatch.setenv(name, value)
    at = start("ann")
    assert prompt in [t.value for t in at.text]
    assert not any(prompt in m.value for m in at.markdown)


def test_tie_is_stored_as_tie_when_chosen(toy: ToyStore) -> None:
    at = start("ann")
    pair = choose(at, "tie")
    [preference] = toy.store.preferences()
    assert preference.tie and preference.pair_id == pair.pair_id
    assert {preference.winner_image, preference.loser_image} == {pair.left.id, pair.right.id}


def test_progress_counts_labelled_and_queued_when_labelling(toy: ToyStore) -> None:
    at = start("ann")
    assert at.get("progress")[0].proto.text == "round 1: 0 labelled / 3 queued"
    choose(at, "left")
    assert at.get("progress")[0].proto.text == "round 1: 1 labelled / 2 queued"


def test_undo_removes_exactly_the_last_label_when_clicked(toy: ToyStore) -> None:
    ann = start("ann")
    first = choose(ann, "left")
    second = choose(ann, "right")
    bob = start("bob")
    choose(bob, "tie")
    ann.button(key="undo").click().run()
    kept = [(label.labeller, label.pair_id, label.choice) for label in toy.store.labels()]
    assert ("ann", first.pair_id, "left") in kept and ("ann", second.pair_id, "right") not in kept
    assert [labeller for labeller, *_ in kept].count("bob") == 1
    assert shown(ann) == second  # the undone pair comes back, in the same side order
    assert any("Undone: your label “Right is better”" in text for text in notices(ann))
    assert not ann.info  # the notice sits in the line under the buttons, not in a box above them
    choose(ann, "left")
    last = [label for label in toy.store.labels() if label.labeller == "ann"][-1]
    assert (last.pair_id, last.choice, last.left_image) == (second.pair_id, "left", second.left.id)


def test_undo_brings_back_older_round_pair_when_new_round_started(toy: ToyStore, tmp_path: Path) -> None:
    at = start("ann")
    labelled = [choose(at, "both_bad") for _ in toy.pair_ids]
    assert shown(at) is None and [code.value for code in at.code] == [round_hint(toy, 2)]
    make_toy_store(tmp_path, n_pairs=2, store=toy.store)  # round 2 starts
    at.button(key="check_queue").click().run()
    assert shown(at).round_id == 2
    at.button(key="undo").click().run()
    assert shown(at) == labelled[-1]
    assert len(toy.store.labels()) == len(labelled) - 1


def test_undo_says_nothing_to_undo_when_no_labels(toy: ToyStore) -> None:
    at = start("ann")
    at.button(key="undo").click().run()
    assert toy.store.labels() == []
    assert any("Nothing to undo" in text for text in notices(at))


def test_empty_queue_names_round_command_when_all_labelled(toy: ToyStore) -> None:
    at = start("ann")
    for _ in toy.pair_ids:
        choose(at, "skip")
    assert shown(at) is None
    assert [code.value for code in at.code] == [round_hint(toy, 2)]  # finish round 1, queue round 2
    assert "Nothing left to label in round 1" in at.success[0].value
    assert not [b for b in at.button if b.key and b.key.startswith("choice_")]


def test_empty_store_names_round_command_when_no_pair_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = make_toy_store(tmp_path, n_pairs=0)
    for name, value in toy.env().items():
        monkeypatch.setenv(name, value)
    at = start("ann")
    assert "No pairs are queued yet" in at.info[0].value
    assert [code.value for code in at.code] == [round_hint(toy, 1)]


def test_missing_store_names_round_command_when_db_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "none.db"))
    monkeypatch.delenv("RLHF_APP_TOKEN", raising=False)
    at = open_app()
    assert [code.value for code in at.code] == [f"python -m rlhf.round run --rounds 1 --run-dir {tmp_path}"]
    assert not (tmp_path / "none.db").exists()


def test_labeller_never_sees_a_pair_twice_while_another_can_label_it(toy: ToyStore) -> None:
    ann = start("ann")
    seen = [choose(ann, "left").pair_id for _ in toy.pair_ids]
    assert sorted(seen) == sorted(toy.pair_ids) and shown(ann) is None
    ann.run()
    assert shown(ann) is None  # a rerun hands out nothing new either
    bob = start("bob")
    assert shown(bob).pair_id in toy.pair_ids
    pair = choose(bob, "right")
    assert {label.labeller for label in toy.store.labels() if label.pair_id == pair.pair_id} == {"ann", "bob"}


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_image_outside_data_folder_is_refused_when_path_escapes(toy: ToyStore, tmp_path: Path, escape: str) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(next(toy.data.rglob("*.png")).read_bytes())
    path = {"dotdot": "../secret.png", "absolute": str(secret), "symlink": "link.png"}[escape]
    if escape == "symlink":
        (toy.data / "link.png").symlink_to(secret)
    first = min(toy.pair_ids)
    with sqlite3.connect(toy.db) as db:  # the store only records relative paths: this is a hand edit
        db.execute("UPDATE images SET path = ? WHERE id = (SELECT image_a FROM pairs WHERE id = ?)", [path, first])
    at = start("ann")
    assert shown(at).pair_id == first
    assert len(at.image) == 1
    assert "outside the data folder" in at.error[0].value
    assert all(at.button(key=f"choice_{c}_{first}").disabled for c in ("left", "right", "tie", "both_bad"))
    choose(at, "skip")  # the labeller can move on
    assert [label.choice for label in toy.store.labels()] == ["skip"]


def test_token_gate_stops_app_until_token_matches(toy: ToyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_APP_TOKEN", "s3cret-token")
    at = open_app()
    assert at.text_input(key="token_input").proto.type == at.text_input(key="token_input").proto.PASSWORD
    assert not [w for w in at.text_input if w.key == "labeller_input"]
    at.text_input(key="token_input").input("wrong").run()
    assert "does not match" in at.error[0].value
    assert not [w for w in at.text_input if w.key == "labeller_input"] and not at.image
    at.text_input(key="token_input").input("s3cret-token").run()
    assert not [w for w in at.text_input if w.key == "token_input"]
    at.text_input(key="labeller_input").input("ann")
    at.button(key="labeller_submit").click().run()
    assert len(at.image) == 2


def test_name_is_asked_once_when_given(toy: ToyStore) -> None:
    at = open_app()
    at.button(key="labeller_submit").click().run()
    assert "Type your name" in at.error[0].value and shown(at) is None
    at.text_input(key="labeller_input").input("  ann  ")
    at.button(key="labeller_submit").click().run()
    choose(at, "left")
    assert not [w for w in at.text_input if w.key == "labeller_input"]
    assert [label.labeller for label in toy.store.labels()] == ["ann"]


def test_stale_press_is_refused_in_notice_when_its_pair_is_gone(toy: ToyStore) -> None:
    at = start("ann")
    first = choose(at, "left")
    second = shown(at)
    # The browser still had the first pair's buttons: a press on one of them reaches its callback.
    at.session_state["desk"].record(toy.store, first.pair_id, first.left.id, "right")
    at.run()
    assert [(label.pair_id, label.choice) for label in toy.store.labels()] == [(first.pair_id, "left")]
    assert shown(at) == second  # the pair on screen stays
    [notice] = [text for text in notices(at) if "not used" in text]
    assert "Key 2 (“Right is better”) was not used" in notice and "Nothing was stored" in notice
    assert "(1 key press not used so far.)" in notice
    desk = at.session_state["desk"]
    desk.record(toy.store, first.pair_id, first.left.id, "tie")
    desk.record(toy.store, first.pair_id, first.left.id, "both_bad")
    at.run()
    [notice] = [text for text in notices(at) if "not used" in text]
    assert "Keys 3 (“Tie”) and 4 (“Both bad”) were not used" in notice
    assert "(3 key presses not used so far.)" in notice
    choose(at, "left")
    assert any(text.startswith(f"Saved “Left is better” for pair {second.pair_id}") and "(3 key presses" in text
               for text in notices(at))  # the tally stays in view


def test_stale_twin_of_stored_press_is_not_reported_when_one_key_reaches_both_pairs(toy: ToyStore) -> None:
    at = start("ann")
    first = choose(at, "left")
    second = shown(at)
    desk = at.session_state["desk"]
    # One key press fires the new pair's button and the previous pair's, still in the page.
    desk.record(toy.store, second.pair_id, second.left.id, "tie")
    desk.record(toy.store, first.pair_id, first.left.id, "tie")
    at.run()
    assert [(label.pair_id, label.choice) for label in toy.store.labels()] == [(first.pair_id, "left"),
                                                                              (second.pair_id, "tie")]
    assert not [text for text in notices(at) if "not used" in text]
    assert any(f"Saved “Tie” for pair {second.pair_id}" in text for text in notices(at))


def test_other_tabs_label_is_kept_when_two_tabs_show_the_pair(toy: ToyStore) -> None:
    tab1, tab2 = start("ann"), start("ann")
    pair = shown(tab1)
    assert shown(tab2) == pair  # a labeller's open claim comes back in every tab
    choose(tab1, "left")
    choose(tab2, "right")
    assert [(label.pair_id, label.choice) for label in toy.store.labels()] == [(pair.pair_id, "left")]
    assert any(f"already labelled pair {pair.pair_id}" in text for text in notices(tab2))
    assert shown(tab2).pair_id != pair.pair_id and not [text for text in notices(tab2) if "not used" in text]


def test_default_store_names_plain_round_command_when_queue_empty(toy: ToyStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_config, "DEFAULT_DB", toy.db)
    at = start("ann")
    for _ in toy.pair_ids:
        choose(at, "skip")
    assert [code.value for code in at.code] == ["python -m rlhf.round run --rounds 2"]


def test_images_are_found_without_rlhf_data_when_store_is_in_a_run_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # As the rounds driver lays a run out: <run folder>/labels.db, image paths relative to its parent.
    toy = make_toy_store(tmp_path, n_pairs=1, data=tmp_path)
    assert toy.db.parent.parent == tmp_path
    monkeypatch.setenv("RLHF_DB", str(toy.db))
    monkeypatch.delenv("RLHF_DATA", raising=False)
    monkeypatch.delenv("RLHF_APP_TOKEN", raising=False)
    at = start("ann")
    assert len(at.image) == 2 and not at.error


def test_data_folder_is_store_folders_parent_when_rlhf_data_unset() -> None:
    assert AppConfig.from_env({}).data == DATA
    assert AppConfig.from_env({"RLHF_DB": str(RUNS / "demo" / "labels.db")}).data == RUNS
    relative = AppConfig.from_env({"RLHF_DB": "runs/demo/labels.db"})
    assert relative.data == Path("runs").absolute() and relative.db.is_absolute()
    assert AppConfig.from_env({"RLHF_DB": "x/labels.db", "RLHF_DATA": "/srv/images"}).data == Path("/srv/images")
    assert AppConfig.from_env({"RLHF_DATA": ""}).data == DATA  # empty counts as unset


def test_round_command_names_run_folder_when_store_is_not_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert round_command(AppConfig.from_env({}), 1) == "python -m rlhf.round run --rounds 1"
    demo = AppConfig.from_env({"RLHF_DB": "data/runs/demo/labels.db"})
    assert round_command(demo, 3) == "python -m rlhf.round run --rounds 3 --run-dir data/runs/demo"
    spaced = AppConfig.from_env({"RLHF_DB": "/tmp/my runs/labels.db"})
    assert round_command(spaced, 1) == "python -m rlhf.round run --rounds 1 --run-dir '/tmp/my runs'"


def test_rounds_to_run_carries_on_or_finishes_newest_round() -> None:
    def rounds(*phases: str) -> list[Round]:
        return [Round(i, phase, {}, "") for i, phase in enumerate(phases, start=1)]

    assert rounds_to_run([]) == 1  # start round 1
    assert rounds_to_run(rounds("queue")) == 1  # round 1 still queueing its pairs
    assert rounds_to_run(rounds("done", "label"), labelled_round=2) == 3  # finish round 2, queue round 3
    assert rounds_to_run(rounds("done", "done"), labelled_round=2) == 3  # start round 3
