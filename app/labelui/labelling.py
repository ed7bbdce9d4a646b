"""What the Label page does: ask the labeller's name, hand out pairs, store choices, undo, show images.

Side order: ``Store.claim_next_pair`` decides which image is on the left (fixed per pair and labeller);
the pair is kept in session state exactly as claimed, drawn in that order, and the buttons carry the
left image's id, so the stored label names the side the person saw.

Stale clicks: the choice buttons' keys contain the pair id, so a key press that reaches the server after
the next pair was drawn belongs to a button the last run did not draw, whose trigger Streamlit ignores,
instead of labelling a pair nobody saw.
"""
from __future__ import annotations

import time

import streamlit as st

from labelui.state import flash
from rlhf.store import AlreadyLabelled, PairToLabel, Store, StoreError

CHOICE_BUTTONS = (  # (stored choice, button label, keyboard shortcut)
    ("left", "Left is better", "1"),
    ("right", "Right is better", "2"),
    ("tie", "Tie", "3"),
    ("both_bad", "Both bad", "4"),
    ("skip", "Skip", "5"),
)
JUDGING_CHOICES = ("left", "right", "tie", "both_bad")  # need both images on screen; skip does not
UNDO_SHORTCUT = "U"
MAX_NAME_CHARS = 64


def choice_key(choice: str, pair_id: int) -> str:
    """Widget key of a choice button: tied to the pair on screen (see the module docstring)."""
    return f"choice_{choice}_{pair_id}"


def ask_labeller() -> None:
    """Ask for the labeller's name once per session and stop the page until one is given."""
    st.title("Image preference labelling")
    with st.form("labeller_form", width=480):
        name = st.text_input("Your name", key="labeller_input", max_chars=MAX_NAME_CHARS,
                             help="Labels are stored under this name: use the same one every time.")
        submitted = st.form_submit_button("Start labelling", type="primary", key="labeller_submit")
    if submitted:
        if name.strip():
            st.session_state.labeller = name.strip()
            st.rerun()
        st.error("Type your name first: labels are stored under it.")
    st.stop()


def change_labeller() -> None:
    st.session_state.labeller = None
    st.session_state.pair = None
    st.session_state.last_saved = None


def pair_on_screen(store: Store, labeller: str, round_id: int | None) -> PairToLabel | None:
    """The pair this session shows, claiming the next one when none is held; None when the queue is empty."""
    if st.session_state.pair is None:
        st.session_state.pair = store.claim_next_pair(labeller, round_id)
        st.session_state.shown_at = time.monotonic()
    return st.session_state.pair


def record(store: Store, labeller: str, pair_id: int, left_image: int, choice: str) -> None:
    """Button callback: store ``choice`` for the pair that was on screen, with its side order and the
    milliseconds since it was first shown."""
    shown = st.session_state.pair
    response_ms = None
    if shown is not None and shown.pair_id == pair_id and st.session_state.shown_at is not None:
        response_ms = round((time.monotonic() - st.session_state.shown_at) * 1000)
    try:
        store.record_label(pair_id, labeller, choice, left_image, response_ms=response_ms)
    except AlreadyLabelled:
        flash("warning", f"You had already labelled pair {pair_id} (in another tab?); that label was kept.")
    except StoreError as e:
        flash("error", f"Not saved: {e}")
        return  # keep the pair on screen so the labeller can try again
    else:
        seconds = "" if response_ms is None else f" after {response_ms / 1000:.1f} s"
        label = dict((c, text) for c, text, _ in CHOICE_BUTTONS)[choice]
        st.session_state.last_saved = f"Saved “{label}” for pair {pair_id}{seconds}."
    st.session_state.pair = None


def undo(store: Store, labeller: str) -> None:
    """Button callback: remove the labeller's last label; the store hands that pair back to them next."""
    try:
        removed = store.undo_last_label(labeller)
    except StoreError as e:
        flash("error", f"Undo failed: {e}")
        return
    st.session_state.last_saved = None
    if removed is None:
        flash("info", "Nothing to undo: you have no labels yet.")
        return
    flash("info", f"Undone: your label “{removed.choice}” of pair {removed.pair_id} (round {removed.round_id}) "
                  "was removed; label it again.")
    # The store hands the undone pair back as this labeller's newest claim, in the same side order;
    # claim in its own round, which may be older than the one on screen.
    st.session_state.pair = None
    try:
        st.session_state.pair = store.claim_next_pair(labeller, removed.round_id)
    except StoreError as e:
        flash("error", f"The label was removed, but its pair could not be fetched again: {e}")
    st.session_state.shown_at = time.monotonic()
