"""Image grids with captions: what people look at instead of numbers."""
from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[np.ndarray], captions: list[str] | None = None, cols: int = 4, cell: int = 128) -> Image.Image:
    """Tile uint8 (H, W, 3) images, upscaled to ``cell`` pixels (nearest, so toy pixels stay sharp), with a
    wrapped caption under each."""
    rows = -(-len(images) // cols)
    font = ImageFont.load_default()
    text_h = 52 if captions else 0
    grid = Image.new("RGB", (cols * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(images):
        x, y = (i % cols) * cell, (i // cols) * (cell + text_h)
        grid.paste(Image.fromarray(im).resize((cell, cell), Image.NEAREST), (x, y))
        if captions:
            lines = textwrap.wrap(captions[i], width=max(8, cell // 6))[:4]
            draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    return grid
