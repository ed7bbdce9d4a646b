"""The labelling app: ``streamlit run app/label.py``.

People compare two images of one prompt on the Label page; the Dashboard shows how labelling and training
go. Settings come from environment variables: RLHF_DB (label store, default data/runs/labels.db),
RLHF_DATA (folder image paths are relative to; by default the parent of the store's folder, where the rounds
driver records them from: data/ for the default store, data/runs/ for RLHF_DB=data/runs/demo/labels.db) and
RLHF_APP_TOKEN (optional access token).
The server binds to 127.0.0.1 (.streamlit/config.toml); reach it from elsewhere through an SSH tunnel.
"""
import streamlit as st

from labelui.config import AppConfig
from labelui.state import init_state, require_token

st.set_page_config(page_title="Image preference labelling", page_icon=":material/compare:", layout="wide")
init_state()
require_token(AppConfig.from_env().token)
pages = [
    st.Page("views/label_page.py", title="Label", icon=":material/compare:", url_path="label", default=True),
    st.Page("views/dashboard_page.py", title="Dashboard", icon=":material/monitoring:", url_path="dashboard"),
]
st.navigation(pages, position="top").run()
