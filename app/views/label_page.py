"""Label page: the prompt, two images side by side, five choices on keys 1-5, undo on U."""
import streamlit as st

from labelui.config import AppConfig, round_command, rounds_to_run
from labelui.images import show_image
from labelui.labelling import (CHOICE_BUTTONS, JUDGING_CHOICES, UNDO_SHORTCUT, ask_labeller, change_labeller,
                               choice_key, pair_on_screen, record, undo)
from labelui.queries import current_round
from labelui.state import show_flash, store_or_stop
from rlhf.store import StoreError

STYLE = """<style>
[data-testid='stMainBlockContainer'] { padding-top: 4rem; padding-bottom: 1rem; }  /* fit a laptop screen */
.st-key-prompt [data-testid='stText'] { font-size: 1.4rem; }
</style>"""

st.html(STYLE)
config = AppConfig.from_env()
store = store_or_stop(config)
if st.session_state.labeller is None:
    ask_labeller()
labeller = st.session_state.labeller

try:
    round_id = current_round(config.db)
    pair = pair_on_screen(store, labeller, round_id)
    progress = store.progress(labeller, round_id)
except StoreError as e:
    st.error(str(e))
    st.stop()

status, who = st.columns([4, 1], vertical_alignment="center")
total = progress.labelled + progress.queued
where = "no round yet" if round_id is None else f"round {round_id}"
status.progress(progress.labelled / total if total else 1.0,
                text=f"{where}: {progress.labelled} labelled / {progress.queued} queued")
with who.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center"):
    st.text(f"Labelling as {labeller}")
    st.button("Change", key="change_labeller", on_click=change_labeller, type="tertiary")
show_flash()

undo_args = (store, labeller)
if pair is None:
    if round_id is None:
        st.info("No pairs are queued yet. Start a round, which samples images and queues pairs, "
                "then press Check again:")
    else:
        st.success(f"Nothing left to label in round {round_id}. Start the next round, then press Check again:")
    st.code(round_command(config, rounds_to_run(store.rounds(), round_id)), language="bash")
    with st.container(horizontal=True):
        st.button("Check again", key="check_queue", type="primary")  # a rerun claims any new pair
        st.button("Undo", key="undo", shortcut=UNDO_SHORTCUT, on_click=undo, args=undo_args,
                  help="Remove your last label and show its pair again.")
    st.stop()

with st.container(key="prompt", gap=None):
    st.caption("Prompt")
    st.text(pair.prompt)  # plain text: prompts are never read as Markdown or HTML
shown = []
for column, image in zip(st.columns(2, gap="large"), (pair.left, pair.right)):
    with column.container(horizontal_alignment="center"):
        shown.append(show_image(config.data, image.path))

with st.container(horizontal=True, horizontal_alignment="center", gap="medium"):
    for choice, label, key in CHOICE_BUTTONS:
        st.button(label, key=choice_key(choice, pair.pair_id), shortcut=key,
                  type="primary" if choice in ("left", "right") else "secondary",
                  disabled=choice in JUDGING_CHOICES and not all(shown),
                  on_click=record, args=(store, labeller, pair.pair_id, pair.left.id, choice))
    st.button("Undo", key="undo", shortcut=UNDO_SHORTCUT, on_click=undo, args=undo_args, type="tertiary",
              help="Remove your last label and show its pair again.")
if st.session_state.last_saved:
    st.caption(st.session_state.last_saved, text_alignment="center")
