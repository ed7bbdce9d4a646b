"""Turning an image path from the store into pixels on screen, refusing anything outside the data folder."""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

SMALL_PX = 256
"""Images whose longer side is below this are upscaled with nearest neighbour (toy images are 32 px)."""
DISPLAY_PX = 320
"""The size, in screen pixels, small images are upscaled to at least: large enough to judge by eye."""


class ImageRefused(Exception):
    """An image the app will not show: outside the data folder, missing, or unreadable."""


def resolve_image(data: Path, relative: str) -> Path:
    """The file for ``relative`` (a path from the store) inside ``data``, after following ``..`` and links.

    Raises ImageRefused when it resolves outside ``data`` (the store only records relative paths, so
    such a path was written by hand or a link points away) or when no such file exists.
    """
    root = data.resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a link loop, ...
        raise ImageRefused(f"image path {relative!r} cannot be resolved: {e}") from None
    if not path.is_relative_to(root):
        raise ImageRefused(f"image path {relative!r} resolves outside the data folder {root}; refused. "
                           "Keep images under the data folder (RLHF_DATA) and record them relative to it.")
    if not path.is_file():
        raise ImageRefused(f"image {relative!r} is not a file in the data folder {root}")
    return path


def load_for_display(path: Path) -> tuple[PILImage.Image, bool]:
    """The image as RGB and whether it is small; a small one is upscaled by a whole factor with nearest
    neighbour, so its pixels stay sharp squares instead of blurring."""
    try:
        with PILImage.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, PILImage.DecompressionBombError) as e:
        raise ImageRefused(f"cannot read image {path.name}: {e}") from None
    longest = max(image.size)
    if longest >= SMALL_PX:
        return image, False
    factor = math.ceil(DISPLAY_PX / longest)
    return image.resize((image.width * factor, image.height * factor), PILImage.Resampling.NEAREST), True


def show_image(data: Path, relative: str, caption: str | None = None) -> bool:
    """Draw the image at ``relative`` (a path from the store), or an error in its place; True when shown.

    Streamlit serves the decoded pixels, never the file itself, so nothing outside ``data`` is reachable.
    """
    try:
        pixels, small = load_for_display(resolve_image(data, relative))
    except ImageRefused as e:
        st.error(str(e))
        return False
    st.image(pixels, caption=caption, width="content" if small else "stretch", output_format="PNG")
    return True


@dataclass(frozen=True)
class InlineImage:
    """An image ready to draw without a second request: its PNG pixels as a ``data:`` URL, or why not."""

    url: str | None
    small: bool = False
    error: str | None = None


def inline_image(data: Path, relative: str) -> InlineImage:
    """Load and encode the image at ``relative`` (a path from the store) inside ``data``.

    The Label page draws its pair from these: the pixels travel inside the page update itself, so they
    are in the page before the buttons that judge them, where an image fetched afterwards would still
    be loading while those buttons already take key presses.
    """
    try:
        pixels, small = load_for_display(resolve_image(data, relative))
    except ImageRefused as e:
        return InlineImage(None, error=str(e))
    png = io.BytesIO()
    pixels.save(png, format="PNG")
    return InlineImage(f"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}", small)


def draw_inline(image: InlineImage) -> bool:
    """Draw an image from ``inline_image``, or its error in its place; True when shown."""
    if image.url is None:
        st.error(image.error)
        return False
    st.image(image.url, width="content" if image.small else "stretch")
    return True
