"""The Dashboard page under AppTest, on a small hand-made store with known counts and agreement."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from rlhf.store import Store
from test_app_toydata import SCENES, ToyStore, add_drawing, make_toy_store

APP = str(Path(__file__).resolve().parent.parent / "app" / "label.py")
# Round 1: ann and bob judge the same four pairs, each seeing image_a on the left.
ROUND_1 = {"ann": ["left", "right", "left", "tie"], "bob": ["left", "right", "right", "tie"]}
# In image order: ann a, b, a, tie and bob a, b, b, tie: 3 of 4 agree (75%); chance agreement is
# (2*1 + 1*2 + 1*1) / 16 = 5/16, so kappa = (0.75 - 0.3125) / (1 - 0.3125) = 0.636.
ROUND_2_ANN = ["left", "skip"]


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyStore:
    """Round 1 as above; round 2 redraws the first two prompts with the same seeds (shifted) and ann
    labels both of its pairs."""
    toy = make_toy_store(tmp_path, n_pairs=4)
    for labeller, choices in ROUND_1.items():
        for pair_id, choice in zip(toy.pair_ids, choices):
            toy.store.record_label(pair_id, labeller, choice, left_image=image_a(toy.store, pair_id), response_ms=1500)
    round_2 = toy.store.add_round({"made_by": "tests"})
    pairs = [tuple(add_drawing(toy.store, toy.data, scene, seed, round_2, shift=3) for seed in (0, 1))
             for scene in SCENES[:2]]
    for pair_id, choice in zip(toy.store.queue_pairs(pairs), ROUND_2_ANN):
        toy.store.record_label(pair_id, "ann", choice, left_image=image_a(toy.store, pair_id), response_ms=2500)
    for name, value in toy.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RLHF_APP_TOKEN", raising=False)
    return toy


def image_a(store: Store, pair_id: int) -> int:
    with store._connect() as db:
        return db.execute("SELECT image_a FROM pairs WHERE id = ?", [pair_id]).fetchone()[0]


def dashboard() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("views/dashboard_page.py").run()
    assert not at.exception
    return at


def table(at: AppTest, column: str) -> pd.DataFrame | None:
    """The one table on the page with ``column``, or None."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(frames) <= 1, f"{len(frames)} tables have a {column!r} column"
    return frames[0] if frames else None


def test_dashboard_shows_counts_and_agreement_when_labels_overlap(toy: ToyStore) -> None:
    at = dashboard()
    assert {m.label: m.value for m in at.metric} == {"Labels": "10", "Labellers": "2", "Agreement": "75.0%",
                                                      "Cohen's kappa": "0.64"}
    rows = [(r["round"], r["labeller"], r["labels"], r["left"], r["right"], r["tie"], r["skip"],
             r["median response (s)"]) for r in table(at, "labeller").to_dict("records")]
    assert rows == [(1, "ann", 4, 2, 1, 1, 0, 1.5), (1, "bob", 4, 1, 2, 1, 0, 1.5), (2, "ann", 2, 1, 0, 0, 1, 2.5)]
    [agreement] = table(at, "comparisons").to_dict("records")
    assert (agreement["round"], agreement["comparisons"], agreement["agreement (%)"]) == (1, 4, 75.0)
    assert agreement["kappa"] == pytest.approx(0.4375 / 0.6875)


def test_dashboard_says_none_yet_when_no_rounds_file(toy: ToyStore) -> None:
    at = dashboard()
    [hint] = [info.value for info in at.info if info.value.startswith("None yet") and "rounds.json" in info.value]
    assert f"`python -m rlhf.round run --rounds 1 --run-dir {toy.db.parent}`" in hint  # the store this app reads
    assert table(at, "rm/accuracy") is None


def test_dashboard_shows_accuracy_and_reward_curves_when_rounds_file_present(toy: ToyStore) -> None:
    rounds = [{"round": 2, "rm/accuracy": 0.7, "rm/accuracy_with_ties": 0.66, "reward/mean": [0.3, 0.35]},
              {"round": 1, "rm/accuracy": 0.62, "reward/mean": [0.1, 0.2, 0.3], "note": "first"}]
    (toy.db.parent / "rounds.json").write_text(json.dumps({"rounds": rounds}))
    at = dashboard()
    metrics = table(at, "rm/accuracy")
    assert metrics["rm/accuracy"].to_dict() == {1: 0.62, 2: 0.7}
    assert list(metrics.columns) == ["rm/accuracy", "rm/accuracy_with_ties"]
    assert len(at.get("vega_lite_chart")) == 2  # accuracy per round, reward over epochs


def test_dashboard_names_the_problem_when_rounds_file_is_broken(toy: ToyStore) -> None:
    (toy.db.parent / "rounds.json").write_text('{"rounds": [{"accuracy": 1}]}')
    at = dashboard()
    assert "rounds.json should hold" in at.error[0].value


def test_gallery_shows_same_prompt_and_seed_across_rounds(toy: ToyStore) -> None:
    at = dashboard()
    gallery = [image for image in at.image]
    assert len(gallery) == 4 * 2  # two prompts x two seeds, each in rounds 1 and 2
    assert [caption for image in gallery[:2] for caption in image.captions] == ["round 1 · toy", "round 2 · toy"]
    texts = [t.value for t in at.text]
    assert f"{SCENES[1].caption()}  (seed 1)" in texts
