"""Small array tools the scene, defect and imaging code share: coordinate grids, edges, blur, noise, masks, shapes.

Everything works on whole float32 images at once (numpy slicing, or one Pillow call in C where Pillow is
faster: bicubic upsampling for smooth noise, line drawing for thin curves), because the generator makes
thousands of images and each one takes a few dozen passes over its pixels. Functions that draw random
numbers take the generator as their first argument and draw in a fixed order, so an image stays the same
from one run to the next.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), cached and read-only because every image needs them."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def ramp(z: np.ndarray) -> np.ndarray:
    """Linear 0..1 transition centred on z = 0: an anti-aliased edge one unit wide."""
    return np.clip(z + 0.5, 0.0, 1.0)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel: np.ndarray = (k / k.sum()).astype(np.float32)
    return kernel


def blur(a: np.ndarray, sigma: float, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Separable gaussian blur by shifted weighted sums; cheaper than FFT at these sizes."""
    if sigma < 0.2:
        return a
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = a
    for axis in axes:
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = k[0] * (p[:n] if axis == 0 else p[:, :n])
        for i in range(1, len(k)):
            acc += k[i] * (p[i:i + n] if axis == 0 else p[:, i:i + n])
        out = acc
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with features about max(shape)/cells pixels across.

    Upsampling a small random array with bicubic interpolation gives smooth noise in one C call.
    """
    h, w = shape
    ch = max(1, int(round(cells * h / max(h, w))))
    cw = max(1, int(round(cells * w / max(h, w))))
    coarse = rng.standard_normal((ch + 2, cw + 2)).astype(np.float32)
    up = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC, box=(1, 1, cw + 1, ch + 1))
    a = np.asarray(up, dtype=np.float32)
    noise: np.ndarray = (a - a.mean()) / (a.std() + 1e-6)
    return noise


def noise_rows(rng: np.random.Generator, rows: int, length: int, corr: float) -> np.ndarray:
    """Independent smooth 1-D noise signals (one per row), correlation length `corr` pixels, unit variance."""
    n = max(2, int(round(length / max(corr, 1.0))))
    coarse = rng.standard_normal((rows, n + 2)).astype(np.float32)
    up = Image.fromarray(coarse).resize((length, rows), Image.Resampling.BICUBIC, box=(1, 0, n + 1, rows))
    a = np.asarray(up, dtype=np.float32)
    noise: np.ndarray = a / (a.std() + 1e-6)
    return noise


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """4-neighbour binary dilation by shifted ORs."""
    m = mask.copy()
    for _ in range(steps):
        d = m.copy()
        d[1:] |= m[:-1]
        d[:-1] |= m[1:]
        d[:, 1:] |= m[:, :-1]
        d[:, :-1] |= m[:, 1:]
        m = d
    return m



def choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def patch(size: int, x0: float, y0: float, radius: float) -> tuple[slice, slice]:
    """Bounding box of a disc, clipped to the image: local edits touch only these pixels."""
    r = int(math.ceil(radius)) + 1
    ys = slice(max(0, int(y0) - r), min(size, int(y0) + r + 2))
    xs = slice(max(0, int(x0) - r), min(size, int(x0) + r + 2))
    return ys, xs


def blob(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, radius: float,
          roughness: float, aspect: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Normalised radius (<1 inside) of an irregular blob: a circle whose radius varies with angle."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / aspect
    v = -dx * sa + dy * ca
    theta = np.arctan2(v, u)
    rt = np.ones_like(theta)
    for j in (2, 3, 4, 5):
        rt += (roughness / j ** 0.7) * rng.uniform(-1, 1) * np.cos(j * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) / (radius * np.maximum(rt, 0.3))


def draw_paths(size: int, paths: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Coverage (0..1) of polylines with per-segment widths, drawn by Pillow at 2x then box-reduced.

    Rasterising thin curves in C is far cheaper than point-to-segment distances over the whole grid,
    and the 2x supersampling anti-aliases them.
    """
    ss = 2
    im = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(im)
    for points, widths in paths:
        p = points * ss + 0.5
        for i in range(len(p) - 1):
            w = max(1.0, float(widths[i]) * ss)
            a, b = (float(p[i, 0]), float(p[i, 1])), (float(p[i + 1, 0]), float(p[i + 1, 1]))
            draw.line([a, b], fill=255, width=int(round(w)))
            h = w / 2
            draw.ellipse([b[0] - h, b[1] - h, b[0] + h, b[1] + h], fill=255)
    return np.asarray(im.reduce(ss), dtype=np.float32) / 255.0
