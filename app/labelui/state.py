"""Session state, the access-token gate and the store, shared by both pages."""
from __future__ import annotations

import hmac
from typing import Any

import streamlit as st

from labelui.config import AppConfig, round_command
from labelui.labelling import Desk
from rlhf.store import Store, StoreError

DEFAULTS: dict[str, Any] = {
    "authenticated": False,  # the visitor typed RLHF_APP_TOKEN (or none is set)
    "store": None,  # Store of the configured path; holds no connection, so safe to keep
}


def init_state() -> None:
    """Give every session key its default once per session; later runs keep what is there."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if "desk" not in st.session_state:
        st.session_state.desk = Desk()  # the labeller's name, the pair on screen, notices


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
