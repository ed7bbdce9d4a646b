"""Evaluation of text-to-image models on a prompt set (DrawBench by default): ``python -m rlhf.evaluate``.

``metrics`` (per-image scores, shared with the rounds' eval phase), ``text_alignment`` (caption, then sentence
cosine), ``stats`` (bootstrap intervals, win rates), ``images`` (drawing and the image cache), ``harness`` (a run),
``report`` (tables and grids).
"""
