"""Dashboard page: labels per round and labeller, agreement, reward-model results, before/after gallery."""
import streamlit as st

from labelui.config import AppConfig, round_command, rounds_to_run
from labelui.dashboard import ROUNDS_FILE, RoundsFileError, labels_per_round, read_rounds, reward_curves, round_metrics
from labelui.images import show_image
from labelui.queries import gallery
from labelui.state import store_or_stop

MAX_GALLERY_ROUNDS = 6  # columns per gallery row: the first round and the newest ones

config = AppConfig.from_env()
store = store_or_stop(config)
labels = store.labels()
rounds_with_labels = sorted({label.round_id for label in labels})
agreement = store.agreement()

st.title("Dashboard")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Labels", len(labels), border=True)
c2.metric("Labellers", len({label.labeller for label in labels}), border=True)
c3.metric("Agreement", "–" if agreement.percent is None else f"{agreement.percent:.1f}%", border=True,
          help=f"Over {agreement.comparisons} comparisons of two labellers on the same pair (skips left out).")
c4.metric("Cohen's kappa", "–" if agreement.kappa is None else f"{agreement.kappa:.2f}", border=True,
          help="Agreement beyond chance: 0 is chance, 1 is perfect.")

st.subheader("Labels per round and labeller")
if labels:
    st.dataframe(labels_per_round(labels), hide_index=True)
else:
    st.info("No labels yet: open the Label page.")

st.subheader("Agreement on overlapping pairs")
per_round = [(round_id, store.agreement(round_id)) for round_id in rounds_with_labels]
overlapping = [{"round": round_id, "comparisons": a.comparisons, "agreement (%)": a.percent, "kappa": a.kappa}
               for round_id, a in per_round if a.comparisons]
if overlapping:
    st.dataframe(overlapping, hide_index=True, width="content",
                 column_config={"agreement (%)": st.column_config.NumberColumn(format="%.1f"),
                                "kappa": st.column_config.NumberColumn(format="%.2f")})
else:
    st.info("No pair has labels from two people yet, so there is no agreement to measure.")

st.subheader("Reward model and reward per round")
try:
    rounds = read_rounds(config.runs)
except RoundsFileError as e:
    st.error(str(e))
    rounds = None
if not rounds:
    st.info(f"None yet: {config.runs / ROUNDS_FILE} appears when a round finishes "
            f"(`{round_command(config, rounds_to_run(store.rounds()))}`).")
else:
    metrics = round_metrics(rounds)
    if not metrics.empty:
        st.dataframe(metrics, width="content")
    accuracy = metrics[[c for c in metrics.columns if c.startswith("rm/")]]
    curves = reward_curves(rounds)
    left, right = st.columns(2, gap="large")
    if len(accuracy) > 1 and not accuracy.empty:
        left.caption("Reward-model accuracy on held-out labels, per round")
        left.line_chart(accuracy, x_label="round", y_label="accuracy", height=260)
    if not curves.empty:
        right.caption("DDPO reward per epoch, one line per round")
        right.line_chart(curves, x_label="DDPO epoch", y_label="reward/mean", height=260)

st.subheader("Before and after: same prompt and seed across rounds")
rows = gallery(config.db)
if not rows:
    st.info("None yet: the gallery fills once a later round draws the same prompts with the same seeds.")
for row in rows:
    st.text(f"{row.prompt}  (seed {row.seed})")
    images = row.images
    if len(images) > MAX_GALLERY_ROUNDS:
        images = images[:1] + images[1 - MAX_GALLERY_ROUNDS:]
    for column, image in zip(st.columns(MAX_GALLERY_ROUNDS), images):
        with column:
            show_image(config.data, image.path, caption=f"round {image.round_id} · {image.model_id}")
