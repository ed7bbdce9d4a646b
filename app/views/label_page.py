"""Label page: the prompt, two images side by side, five choices on keys 1-5, undo on U.

Everything the page shows is read and encoded before anything is drawn, so one pair replaces the
previous one in a single quick burst of page updates (see ``labelui.labelling``).
"""
import streamlit as st

from labelui.config import AppConfig, round_command, rounds_to_run
from labelui.images import draw_inline, inline_image
from labelui.labelling import CHOICE_BUTTONS, JUDGING_CHOICES, UNDO_SHORTCUT, ask_labeller, choice_key
from labelui.queries import current_round
from labelui.state import store_or_stop
from rlhf.store import StoreError

STYLE = """<style>
[data-testid='stMainBlockContainer'] { padding-top: 4rem; padding-bottom: 1rem; }  /* fit a laptop screen */
.st-key-prompt [data-testid='stText'] { font-size: 1.4rem; }
/* the previous pair's buttons, kept in the page while the next pair is drawn */
.st-key-choices [data-retained] { display: none; }
</style>"""
# The browser may show one run's page updates in several steps. The pair's prompt and images stay hidden
# until the first of its own buttons has arrived (they come before it), so they are never on screen with
# only the previous pair's buttons, and its buttons never take a key press while it is hidden.
GATE = """<style>
.st-key-pair {{ visibility: hidden; }}
body:has(.st-key-{buttons}:not([data-retained])) .st-key-pair {{ visibility: visible; }}
</style>"""
UNDO_HELP = "Remove your last label and show its pair again."


def show_notice(notice: tuple[str, str] | None, refused: int) -> None:
    """What the last action did, in one line under the buttons, so the buttons never move."""
    if notice is not None:
        kind, text = notice
        if refused:
            text += f" ({refused} key press{'es' if refused > 1 else ''} not used so far.)"
        with st.container(key="notice"):
            st.caption(f":orange[:material/warning: {text}]" if kind == "warning" else text,
                       text_alignment="center")


st.html(STYLE)
config = AppConfig.from_env()
store = store_or_stop(config)
desk = st.session_state.desk
if desk.labeller is None:
    ask_labeller(desk)
labeller = desk.labeller
desk.settle_presses()

try:
    round_id = current_round(config.db)
    pair = desk.pair_on_screen(store, round_id)
    progress = store.progress(labeller, round_id)
    command = None if pair else round_command(config, rounds_to_run(store.rounds(), round_id))
except StoreError as e:
    st.error(str(e))
    st.stop()
images = [inline_image(config.data, image.path) for image in (pair.left, pair.right)] if pair else []
error, notice, refused = desk.error, desk.notice, desk.refused

status, who = st.columns([4, 1], vertical_alignment="center")
total = progress.labelled + progress.queued
where = "no round yet" if round_id is None else f"round {round_id}"
status.progress(progress.labelled / total if total else 1.0,
                text=f"{where}: {progress.labelled} labelled / {progress.queued} queued")
with who.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center"):
    st.text(f"Labelling as {labeller}")
    st.button("Change", key="change_labeller", on_click=desk.change_labeller, type="tertiary")
if error is not None:
    st.error(error)
    desk.shown_error(error)

if pair is None:
    if round_id is None:
        st.info("No pairs are queued yet. Start a round, which samples images and queues pairs, "
                "then press Check again:")
    else:
        st.success(f"Nothing left to label in round {round_id}. Start the next round, then press Check again:")
    st.code(command, language="bash")
    with st.container(horizontal=True):
        st.button("Check again", key="check_queue", type="primary")  # a rerun claims any new pair
        st.button("Undo", key="undo", shortcut=UNDO_SHORTCUT, on_click=desk.undo, args=(store,), help=UNDO_HELP)
    show_notice(notice, refused)
else:
    st.html(GATE.format(buttons=choice_key(CHOICE_BUTTONS[0][0], pair.pair_id)))
    with st.container(key="pair"):
        with st.container(key="prompt", gap=None):
            st.caption(f"Prompt · pair {pair.pair_id}")
            st.text(pair.prompt)  # plain text: prompts are never read as Markdown or HTML
        shown = []
        for column, image in zip(st.columns(2, gap="large"), images):
            with column.container(horizontal_alignment="center"):
                shown.append(draw_inline(image))
    with st.container(key="choices", horizontal=True, horizontal_alignment="center", gap="medium"):
        for choice, label, key in CHOICE_BUTTONS:
            st.button(label, key=choice_key(choice, pair.pair_id), shortcut=key,
                      type="primary" if choice in ("left", "right") else "secondary",
                      disabled=choice in JUDGING_CHOICES and not all(shown),
                      on_click=desk.record, args=(store, pair.pair_id, pair.left.id, choice))
        st.button("Undo", key="undo", shortcut=UNDO_SHORTCUT, on_click=desk.undo, args=(store,), type="tertiary",
                  help=UNDO_HELP)
    show_notice(notice, refused)
