"""Session state, the access-token gate and the store, shared by both pages."""
from __future__ import annotations

import hmac
from typing import Any

import streamlit as st

from labelui.config import AppConfig, round_command
from rlhf.store import Store, StoreError

DEFAULTS: dict[str, Any] = {
    "authenticated": False,  # the visitor typed RLHF_APP_TOKEN (or none is set)
    "labeller": None,  # name labels are stored under; asked once per session
    "store": None,  # Store of the configured path; holds no connection, so safe to keep
    "pair": None,  # PairToLabel on screen, in the side order it is shown and stored with
    "shown_at": None,  # time.monotonic() when that pair was first shown, for response_ms
    "flash": None,  # (kind, text) to show once on the next run: 'info', 'warning' or 'error'
    "last_saved": None,  # one line about the label just stored
}


def init_state() -> None:
    """Give every session key its default once per session; later runs keep what is there."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


def require_token(expected: str | None) -> None:
    """When a token is configured, ask for it and stop the page until it matches."""
    if expected is None or st.session_state.authenticated:
        return
    st.title("Image preference labelling")
    given = st.text_input("Access token", type="password", key="token_input", width=480,
                          help="Ask whoever runs this app; it is set with RLHF_APP_TOKEN.")
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        st.session_state.authenticated = True
        st.rerun()
    if given:
        st.error("That token does not match. Check it and try again.")
    st.stop()


def store_or_stop(config: AppConfig) -> Store:
    """The label store, or a message naming the command that creates it and a stop."""
    held = st.session_state.store
    if held is not None and held.path == config.db:
        return held
    if not config.db.exists():
        st.info(f"No label store at {config.db} yet. Start a round, which samples images and queues pairs:")
        st.code(round_command(config, rounds=1), language="bash")
        st.stop()
    try:
        store = Store(config.db, create=False)
    except StoreError as e:
        st.error(str(e))
        st.stop()
    st.session_state.store = store
    return store


def flash(kind: str, text: str) -> None:
    """Show ``text`` once, at the top of the next run (callbacks cannot draw)."""
    st.session_state.flash = (kind, text)


def show_flash() -> None:
    if st.session_state.flash is not None:
        kind, text = st.session_state.flash
        st.session_state.flash = None
        getattr(st, kind)(text)
