"""Contact sheets: images side by side with a caption each, for a person to look over (Pillow only)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw


def contact_sheet(images: list[tuple[Path, str]], tile: int = 160, columns: int = 6) -> Image.Image:
    """Each (file, caption) as a tile, in order; a file that cannot be read leaves its tile blank (the CSV beside
    the sheet lists it all the same)."""
    caption = 14
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("L", (columns * tile, rows * (tile + caption)), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (path, text) in enumerate(images):
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        try:
            with Image.open(path) as image:
                sheet.paste(image.convert("L").resize((tile, tile)), (x, y + caption))
        except OSError:
            pass
        draw.text((x + 2, y + 1), text, fill=0)
    return sheet
