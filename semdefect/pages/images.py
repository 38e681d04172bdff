"""Images inlined into a self-contained page: a JPEG data URI of at most `side` pixels (workstation side).

Pages carry their images inside them (base64), so they open from a `file://` URL on an air-gapped workstation and
survive being mailed or moved. SEM images are grey and often large, 16-bit or with a data bar: they are shown as they
are, scaled to fit, stretched to 8 bits where they have more. An image that cannot be read gives None; the page shows a
named placeholder in its place.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 85


def to_8bit(image: Image.Image) -> Image.Image:
    """Grey or RGB, 8 bits per channel: a 16-bit or float image stretched from its lowest to its highest value."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8))
    if image.mode in ("RGBA", "P", "CMYK"):
        return image.convert("RGB")
    return image.convert("L")  # LA, 1 and the other grey modes


def data_uri(path: Path, side: int) -> str | None:
    """The image as a JPEG data URI fitting a `side` x `side` box, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            shown = to_8bit(image)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    shown = shown.copy()
    shown.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
