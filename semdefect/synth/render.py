"""Imaging: a wafer scene seen through an SEM's secondary-electron detector, and the instrument's data bar.

The contrast a CNN must learn to see past comes from here, not from the wafer: edges brighter than flat
tops (the edge effect), material contrast, shadowing toward the side detector, beam blur, charging
gradients, scan-line jitter, shot noise and, on some images, the data bar along the bottom. Keeping it
apart from the scene means an image without its defect is made with the very same imaging.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semdefect.synth.primitives import blur, grid, smooth_noise
from semdefect.synth.scenes import REFERENCE_SIZE, Scene


@lru_cache(maxsize=1)
def _bar_font() -> ImageFont.ImageFont:
    # The bitmap font renders the same on every machine (FreeType versions differ), keeping files byte-identical.
    return ImageFont.load_default_imagefont()


def _data_bar(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """An instrument data bar: uniform band, white acquisition text and a scale bar, drawn at 128 px width."""
    w = max(size, REFERENCE_SIZE)
    h = max(12, int(round(rows * w / size)))
    r = rng.random()
    bg, fg = (int(rng.integers(0, 25)), 255) if r < 0.6 else (int(rng.integers(35, 80)), 255) if r < 0.8 else \
        (int(rng.integers(170, 215)), 0)
    im = Image.new("L", (w, h), bg)
    draw = ImageDraw.Draw(im)
    if rng.random() < 0.5:
        draw.line([(0, 0), (w, 0)], fill=fg, width=1)
    fields = [
        f"{rng.uniform(1, 20):.1f}kV",
        f"WD{rng.uniform(3, 15):.1f}mm",
        f"x{int(rng.choice([5, 10, 20, 35, 50, 100, 150]))}.{int(rng.integers(10))}k",
        str(rng.choice(["SE", "SE2", "InLens", "BSE", "SEI"])),
        f"{int(rng.integers(1, 13)):02d}/{int(rng.integers(1, 29)):02d}/{int(rng.integers(10, 26))}",
    ]
    font = _bar_font()
    x = int(rng.integers(1, 6))
    y = max(0, (h - 11) // 2 + int(rng.integers(-1, 2)))
    scale_len = int(rng.uniform(0.12, 0.25) * w)
    for f in rng.permutation(fields)[: int(rng.integers(2, 5))]:
        tw = int(draw.textlength(str(f), font=font))
        if x + tw > w - scale_len - 8:
            break
        draw.text((x, y), str(f), fill=fg, font=font)
        x += tw + int(rng.integers(5, 12))
    x1 = w - 3
    x0 = x1 - scale_len
    yb = h - 4
    draw.rectangle([x0, yb - 1, x1, yb], fill=fg)
    draw.line([(x0, yb - 4), (x0, yb)], fill=fg)
    draw.line([(x1, yb - 4), (x1, yb)], fill=fg)
    label = str(rng.choice(["100nm", "200nm", "500nm", "1um", "2um"]))
    draw.text((x0 + 1, max(0, yb - 13)), label, fill=fg, font=font)
    if (w, h) != (size, rows):
        im = im.resize((size, rows), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32)


def render(scene: Scene, rng: np.random.Generator, difficulty: float, exclude: np.ndarray) -> np.ndarray:
    """Form the SEM image of a scene: SE signal, beam blur, charging, scan jitter, shot noise, data bar.

    Brightness and contrast are set from the pixels outside `exclude` (the defect), as an operator sets
    them on a defect-free area: so a defect changes its own pixels, not the exposure of the whole image.
    """
    size, sc = scene.size, scene.scale
    h = blur(scene.height, 0.5 * sc + 0.2)
    gy, gx = np.gradient(h)
    gx *= sc
    gy *= sc
    slope = np.sqrt(gx * gx + gy * gy)
    # Edge effect: tilted surfaces emit more secondary electrons; slopes facing the detector more still.
    edge = rng.uniform(1.0, 2.6)
    facing = rng.uniform(0.0, 0.8) * edge
    signal = scene.material + edge * slope + facing * (gx * math.cos(scene.detector) + gy * math.sin(scene.detector))
    signal = signal * scene.gain + scene.extra
    signal = blur(signal, (rng.uniform(0.3, 0.9) + 0.6 * difficulty * rng.random()) * sc)
    # Charging and detector drift: a slow brightness gradient over the field.
    yy, xx = grid(size)
    a = rng.uniform(0, 0.3)
    phi = rng.uniform(0, 2 * math.pi)
    ramp = ((xx * math.cos(phi) + yy * math.sin(phi)) / size).astype(np.float32)
    signal = signal * (1 + a * (ramp - ramp.mean()) + rng.uniform(0, 0.1) * smooth_noise(rng, (size, size), 2.5))
    # Scan instability: each line of the raster lands slightly left or right.
    if rng.random() < 0.5:
        shift = rng.normal(0, rng.uniform(0.1, 0.5) * sc, size).astype(np.float32)
        src = xx + shift[:, None]
        x0 = np.clip(np.floor(src).astype(np.int32), 0, size - 2)
        f = np.clip(src - x0, 0, 1)
        rows = np.arange(size)[:, None]
        signal = signal[rows, x0] * (1 - f) + signal[rows, x0 + 1] * f
    # Auto brightness/contrast from the image's own statistics, data bar and defect left out.
    keep = ~exclude
    keep[scene.usable:] = False
    ref = signal[keep] if keep.mean() > 0.2 else signal
    mean, sd = float(ref.mean()), float(ref.std())
    contrast = rng.uniform(22, 50) / max(sd, 0.12)
    img = rng.uniform(85, 165) + contrast * (signal - mean)
    # Shot noise grows with the signal (Poisson); at low dose it is also smeared along the scan direction.
    noise: np.ndarray = rng.standard_normal((size, size)).astype(np.float32)
    if rng.random() < 0.4:
        noise = blur(noise, rng.uniform(0.5, 1.0), axes=(1,)) * 1.8
    k = rng.uniform(0.2, 0.6) + difficulty * rng.uniform(0, 1.4)
    img = img + noise * np.sqrt(np.maximum(img, 1.0) * k)
    img += rng.normal(0, rng.uniform(0, 2) + 3 * difficulty * rng.random(), size).astype(np.float32)[:, None]
    if scene.bar:
        img[scene.usable:] = _data_bar(rng, size, scene.bar)
    image: np.ndarray = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return image
