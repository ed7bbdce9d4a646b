"""Helpers of the labelling app (``streamlit run app/label.py``): settings, session state, images, queries.

Everything here stays free of torch and training code, so the app starts in a second and a labeller's
click never waits on a model.
"""
