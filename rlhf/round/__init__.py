"""Alternating rounds of sample -> label -> reward model -> DDPO -> evaluate (``python -m rlhf.round``)."""
