"""What the Label page does: ask the labeller's name, hand out pairs, store choices, undo.

Side order: ``Store.claim_next_pair`` decides which image is on the left (fixed per pair and labeller);
the pair is kept exactly as claimed, drawn in that order, and the buttons carry the left image's id, so
the stored label names the side the person saw.

Which pair a press judges: the choice buttons' keys contain the pair id, so a press names the pair whose
buttons the browser had. The browser may show a run's page updates in several steps, so the Label page
draws a pair's prompt and images (pixels inline, ``images.inline_image``) before its buttons and keeps them
hidden until its first button is in the page: a pair's buttons never take a press while it is not on
screen. ``Desk.record`` stores a press only for the pair this session has on screen. A press for any other
pair (the browser still had the previous pair's buttons, already labelled, while the next pair was loading)
stores nothing and is refused in the notice line under the buttons, which also counts the session's
refused presses; that line is drawn on every run, so a refusal stays in view however quickly the next runs
follow (a toast does not: Streamlit's next toast replaces it). While a run draws the next pair, Streamlit
keeps the previous pair's buttons in the page and their shortcuts still fire, so one key press can reach
both pairs; that stale twin of a press that was stored is not reported.

Callbacks and reruns: Streamlit interrupts a run for a newer key press at its next ``st`` call or
session-state access, callbacks included; an interrupted callback is not run again and its press is gone.
So the callbacks here never touch ``st.session_state``: they change the session's ``Desk``, passed to them
as an argument, and cannot be cut short between storing a label and recording that they did. The app's
``.streamlit/config.toml`` turns off fast reruns (which would run the newer press on another thread at
once) and the garbage collection after each run (whose pause let a newer press replace one not yet run);
``Desk.lock`` keeps the desk consistent should fast reruns be turned back on.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from labelui.queries import current_round
from rlhf.store import AlreadyLabelled, PairToLabel, Store, StoreError

CHOICE_BUTTONS = (  # (stored choice, button label, keyboard shortcut)
    ("left", "Left is better", "1"),
    ("right", "Right is better", "2"),
    ("tie", "Tie", "3"),
    ("both_bad", "Both bad", "4"),
    ("skip", "Skip", "5"),
)
BUTTON_LABELS = {choice: label for choice, label, _ in CHOICE_BUTTONS}
SHORTCUTS = {choice: key for choice, _, key in CHOICE_BUTTONS}
JUDGING_CHOICES = ("left", "right", "tie", "both_bad")  # need both images on screen; skip does not
UNDO_SHORTCUT = "U"
MAX_NAME_CHARS = 64


def choice_key(choice: str, pair_id: int) -> str:
    """Widget key of a choice button: tied to the pair it judges (see the module docstring)."""
    return f"choice_{choice}_{pair_id}"


def refusal_text(choices: list[str]) -> str:
    keys = [f"{SHORTCUTS[c]} (“{BUTTON_LABELS[c]}”)" for c in choices]
    if len(keys) == 1:
        return (f"Key {keys[0]} was not used: it came while the next pair was loading. Nothing was stored; "
                "judge the pair on screen.")
    return (f"Keys {', '.join(keys[:-1])} and {keys[-1]} were not used: they came while the next pair was "
            "loading. Nothing was stored; judge the pair on screen.")


@dataclass
class Press:
    """A choice button pressed since the page last drew."""

    choice: str
    used: bool  # it judged the pair on screen (stored, or found already labelled elsewhere)


@dataclass
class Desk:
    """One browser session's labelling state, kept in ``st.session_state.desk`` and changed under ``lock``."""

    labeller: str | None = None
    pair: PairToLabel | None = None
    """The pair on screen, in the side order it is shown and stored with."""
    shown_at: float | None = None
    """``time.monotonic()`` when that pair was handed out, for ``response_ms``."""
    notice: tuple[str, str] | None = None
    """(kind, text) for the line under the buttons: what the last action did; kind 'info' or 'warning'."""
    refused: int = 0
    """Presses refused in this session, shown beside every notice once there is one."""
    error: str | None = None
    """A failure to show once above the pair."""
    presses: list[Press] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def pair_on_screen(self, store: Store, round_id: int | None) -> PairToLabel | None:
        """The pair to show, claiming the next one when none is held; None when the queue is empty."""
        with self.lock:
            if self.pair is None:
                self._claim(store, round_id)
            return self.pair

    def _claim(self, store: Store, round_id: int | None) -> None:
        self.pair = store.claim_next_pair(self.labeller, round_id)
        self.shown_at = time.monotonic()

    def record(self, store: Store, pair_id: int, left_image: int, choice: str) -> None:
        """Button callback: store ``choice`` for pair ``pair_id`` when it is the pair on screen, with its side
        order and the milliseconds since it was handed out, and hand out the next pair."""
        with self.lock:
            shown = self.pair
            if shown is None or shown.pair_id != pair_id:
                self.presses.append(Press(choice, used=False))
                return
            response_ms = None if self.shown_at is None else round((time.monotonic() - self.shown_at) * 1000)
            try:
                store.record_label(pair_id, self.labeller, choice, left_image, response_ms=response_ms)
            except AlreadyLabelled:
                self.notice = ("warning", f"You had already labelled pair {pair_id} (in another tab?); "
                                          "that label was kept.")
            except StoreError as e:
                self.error = f"Not saved: {e}"
                return  # keep the pair on screen so the labeller can try again
            else:
                seconds = "" if response_ms is None else f" after {response_ms / 1000:.1f} s"
                self.notice = ("info", f"Saved “{BUTTON_LABELS[choice]}” for pair {pair_id}{seconds}.")
            self.presses.append(Press(choice, used=True))
            self.pair = None
            try:  # hand out the next pair now, so the run this press starts only draws
                self._claim(store, current_round(store.path))
            except StoreError as e:
                self.error = f"Saved, but the next pair could not be fetched: {e}"

    def settle_presses(self) -> None:
        """Refuse, in the notice, the presses since the page last drew that judged no pair on screen.

        A refused press is not reported when a press of the same choice judged the pair on screen
        meanwhile: that is the same key press reaching the previous pair's buttons too. Presses of one
        choice that were all refused count once. The page calls this before it draws.
        """
        with self.lock:
            used = {press.choice for press in self.presses if press.used}
            refused = list(dict.fromkeys(press.choice for press in self.presses
                                         if not press.used and press.choice not in used))
            if refused:
                saved = f"{self.notice[1]} " if used and self.notice is not None else ""
                self.notice = ("warning", saved + refusal_text(refused))
                self.refused += len(refused)
            self.presses.clear()

    def shown_error(self, text: str) -> None:
        with self.lock:
            if self.error == text:
                self.error = None

    def undo(self, store: Store) -> None:
        """Button callback: remove the labeller's last label; the store hands that pair back to them next."""
        with self.lock:
            try:
                removed = store.undo_last_label(self.labeller)
            except StoreError as e:
                self.error = f"Undo failed: {e}"
                return
            if removed is None:
                self.notice = ("info", "Nothing to undo: you have no labels yet.")
                return
            self.notice = ("info", f"Undone: your label “{BUTTON_LABELS[removed.choice]}” of pair "
                                   f"{removed.pair_id} (round {removed.round_id}) was removed; label it again.")
            # The store hands the undone pair back as this labeller's newest claim, in the same side order;
            # claim in its own round, which may be older than the one on screen.
            self.pair = None
            try:
                self._claim(store, removed.round_id)
            except StoreError as e:
                self.error = f"The label was removed, but its pair could not be fetched again: {e}"

    def change_labeller(self) -> None:
        """Button callback: forget the name, so the page asks for one again."""
        with self.lock:
            self.labeller = None
            self.pair = None
            self.notice = None
            self.refused = 0


def ask_labeller(desk: Desk) -> None:
    """Ask for the labeller's name once per session and stop the page until one is given."""
    st.title("Image preference labelling")
    with st.form("labeller_form", width=480):
        name = st.text_input("Your name", key="labeller_input", max_chars=MAX_NAME_CHARS,
                             help="Labels are stored under this name: use the same one every time.")
        submitted = st.form_submit_button("Start labelling", type="primary", key="labeller_submit")
    if submitted:
        if name.strip():
            with desk.lock:
                desk.labeller = name.strip()
            st.rerun()
        st.error("Type your name first: labels are stored under it.")
    st.stop()
