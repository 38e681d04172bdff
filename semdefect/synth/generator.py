"""Synthetic top-down SEM images of patterned-wafer defects, ten classes, from numpy and Pillow alone.

Why it exists: the pipeline needs a dataset that runs anywhere and may be committed, and real SEM images
are third-party. The images are made the way an SEM image is: a wafer scene (topography and material of a
line/space grating, a contact-hole array or a polished surface), a defect edited into that scene, then the
secondary-electron signal (edges brighter than flat tops, material contrast, detector shadowing), beam blur,
charging gradients, scan-line jitter, shot noise and, sometimes, the instrument's data bar.

Every image draws from its own random stream, derived from (seed, class index, image index), so any image
can be remade alone and the files depend neither on generation order nor on the output folder.

Writes DIR/{train,val,test}/<class>/synth_<class>_<index>.png (DIR/<class>/ without --split).
Made by `python generate_images.py` (semdefect.commands.generate_images).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semdefect import CLASS_NAMES
from semdefect.board.errors import SemdefectError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_SIZE = 32
# Scene dimensions below are in pixels of a 128-pixel image and scale with the image size.
REFERENCE_SIZE = 128
SHEET_COLUMNS = 6

# Which wafer backgrounds each class is drawn on (weights). A bridge or an open needs lines, a via defect
# needs a hole array, CMP damage is seen on polished surfaces; clean images and the defects that can land
# anywhere use every background, so the background alone never gives the class away.
BACKGROUND_WEIGHTS: dict[str, dict[str, float]] = {
    "Bridge": {"grating": 1.0},
    "clean": {"grating": 0.4, "holes": 0.25, "blank": 0.35},
    "cmp": {"blank": 0.85, "grating": 0.15},
    "contamination": {"blank": 0.4, "grating": 0.4, "holes": 0.2},
    "crack": {"blank": 0.6, "grating": 0.3, "holes": 0.1},
    "ler": {"grating": 1.0},
    "opens": {"grating": 1.0},
    "other": {"grating": 0.6, "blank": 0.4},
    "particle": {"blank": 0.5, "grating": 0.3, "holes": 0.2},
    "via": {"holes": 1.0},
}


class UsageError(SemdefectError, ValueError):
    """A bad command-line argument or API parameter; main() prints it as one line and exits 2."""


# ---------------------------------------------------------------------------------------------------------
# Small array tools (vectorised, float32: an image is 16 k pixels, so a few dozen passes cost ~1 ms)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), cached and read-only because every image needs them."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _ramp(z: np.ndarray) -> np.ndarray:
    """Linear 0..1 transition centred on z = 0: an anti-aliased edge one unit wide."""
    return np.clip(z + 0.5, 0.0, 1.0)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(a: np.ndarray, sigma: float, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
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


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with features about max(shape)/cells pixels across.

    Upsampling a small random array with bicubic interpolation gives smooth noise in one C call.
    """
    h, w = shape
    ch = max(1, int(round(cells * h / max(h, w))))
    cw = max(1, int(round(cells * w / max(h, w))))
    coarse = rng.standard_normal((ch + 2, cw + 2)).astype(np.float32)
    up = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC, box=(1, 1, cw + 1, ch + 1))
    a = np.asarray(up, dtype=np.float32)
    return (a - a.mean()) / (a.std() + 1e-6)


def _noise_rows(rng: np.random.Generator, rows: int, length: int, corr: float) -> np.ndarray:
    """Independent smooth 1-D noise signals (one per row), correlation length `corr` pixels, unit variance."""
    n = max(2, int(round(length / max(corr, 1.0))))
    coarse = rng.standard_normal((rows, n + 2)).astype(np.float32)
    up = Image.fromarray(coarse).resize((length, rows), Image.Resampling.BICUBIC, box=(1, 0, n + 1, rows))
    a = np.asarray(up, dtype=np.float32)
    return a / (a.std() + 1e-6)


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
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


def _strength(rng: np.random.Generator, difficulty: float) -> float:
    """Severity of one defect in (0, 1]: higher difficulty draws smaller and fainter defects."""
    lo = max(0.1, 0.7 - 0.6 * difficulty)
    hi = 1.0 - 0.35 * difficulty
    return float(rng.uniform(lo, hi))


def _count(rng: np.random.Generator, difficulty: float, lo: int, hi: int) -> int:
    """How many instances of a defect: lo..hi at difficulty 0, fewer (down to lo) as difficulty rises.

    Several instances spread over the field make a class recognisable wherever they land, which is what a
    small CNN trained on a few hundred images needs; a single sub-feature-sized defect it can only memorise.
    """
    top = lo + int(round((hi - lo) * (1.0 - 0.5 * difficulty)))
    return int(rng.integers(lo, top + 1))


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _patch(size: int, x0: float, y0: float, radius: float) -> tuple[slice, slice]:
    """Bounding box of a disc, clipped to the image: local edits touch only these pixels."""
    r = int(math.ceil(radius)) + 1
    ys = slice(max(0, int(y0) - r), min(size, int(y0) + r + 2))
    xs = slice(max(0, int(x0) - r), min(size, int(x0) + r + 2))
    return ys, xs


def _blob(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, radius: float,
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


def _draw_paths(size: int, paths: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------------------
# The wafer scene


@dataclass
class Scene:
    """A wafer area before imaging: what the SEM will see, as maps over the image grid.

    `height` drives the edge effect (slopes emit more secondary electrons), `material` the flat-area
    yield, `gain` and `extra` foreign effects (shadows, stains, charging halos) that are not topography.
    """

    size: int
    kind: str
    height: np.ndarray
    material: np.ndarray
    low: float                  # yield of the floor material (spaces, hole bottoms)
    high: float                 # yield of the top material (lines, surface)
    texture: np.ndarray         # additive material texture (polish haze, grain)
    bar: int                    # rows of the instrument data bar at the bottom, 0 = none
    detector: float             # azimuth of the side detector, radians: sets shadow and bright-edge side
    geom: object | None = None  # the background's geometry, for defects that edit the pattern
    gain: np.ndarray = field(init=False)
    extra: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.gain = np.ones((self.size, self.size), np.float32)
        self.extra = np.zeros((self.size, self.size), np.float32)

    @property
    def usable(self) -> int:
        """Rows above the data bar: defects go here, where they stay visible."""
        return self.size - self.bar

    @property
    def scale(self) -> float:
        return self.size / REFERENCE_SIZE

    def copy(self) -> Scene:
        """A copy whose maps can be edited; the background geometry is shared (defects never edit it)."""
        other = copy.copy(self)
        for name in ("height", "material", "gain", "extra"):
            setattr(other, name, getattr(self, name).copy())
        return other

    def set_height(self, height: np.ndarray) -> None:
        """Replace the topography; the surface material follows it (top material up, floor down)."""
        self.height = height
        self.material = self.low + (self.high - self.low) * np.clip(height, 0.0, 1.0) + self.texture

    def pick_point(self, rng: np.random.Generator, margin: float) -> tuple[int, int]:
        """A random pixel (x, y) at least `margin` away from the borders and the data bar."""
        m = int(min(margin, self.usable / 3, self.size / 3))
        x = int(rng.integers(m, self.size - m))
        y = int(rng.integers(m, max(m + 1, self.usable - m)))
        return x, y


def _rotated(size: int, angle: float, du: float, dv: float) -> tuple[np.ndarray, np.ndarray]:
    """Pattern coordinates: u across the lines (or along array rows), v along them."""
    y, x = _grid(size)
    c = (size - 1) / 2
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return (x - c) * ca + (y - c) * sa + du, (c - x) * sa + (y - c) * ca + dv


def _pattern_angle(rng: np.random.Generator) -> float:
    """Mostly Manhattan layouts, some diagonal, a few at any angle (rotated stage or layout)."""
    r = rng.random()
    if r < 0.4:
        return 0.0
    if r < 0.75:
        return math.pi / 2
    if r < 0.9:
        return math.pi / 4 * (1 if rng.random() < 0.5 else 3)
    return float(rng.uniform(0, math.pi))


@dataclass
class Grating:
    """A line/space grating with rough edges; re-renderable with extra edge displacement (LER, collapse)."""

    pitch: float
    half_width: float
    sidewall: float
    u: np.ndarray
    v: np.ndarray
    k: np.ndarray        # line (cell) index of each pixel
    t: np.ndarray        # position across the cell, 0..pitch; the line is centred at pitch / 2
    left: np.ndarray     # outward displacement of each pixel's left edge (normal LER), pixels
    right: np.ndarray

    @property
    def gap_half(self) -> float:
        return self.pitch / 2 - self.half_width

    def height(self, left_extra: np.ndarray | float = 0.0, right_extra: np.ndarray | float = 0.0,
               touch: bool = False) -> np.ndarray:
        """Topography with the given extra outward edge displacement (pixels).

        Edges stay inside their line's cell, so extra roughness never fakes a bridge or an open, unless
        `touch` lets them reach the neighbour (collapsed lines lean onto each other).
        """
        lo = -(self.half_width - 0.6)
        hi = self.gap_half + (0.5 if touch else -0.5) * self.sidewall
        el = np.clip(self.left + left_extra, lo, hi)
        er = np.clip(self.right + right_extra, lo, hi)
        c = self.pitch / 2
        a = (self.t - (c - self.half_width - el)) / self.sidewall
        b = ((c + self.half_width + er) - self.t) / self.sidewall
        return _ramp(np.minimum(a, b))


def _make_grating(rng: np.random.Generator, size: int, class_name: str) -> Grating:
    """A random grating: pitch, duty cycle, orientation, sidewall and its normal edge roughness.

    Classes whose defect lives on the lines get pitches wide enough for the defect to be resolved.
    """
    sc = size / REFERENCE_SIZE
    lo, hi = {"ler": (12, 26), "Bridge": (11, 24), "opens": (11, 24), "other": (10, 24)}.get(class_name, (6, 24))
    pitch = float(np.exp(rng.uniform(math.log(lo), math.log(hi)))) * sc
    duty = rng.uniform(0.35, 0.6)
    sidewall = max(0.6, rng.uniform(0.7, 1.6) * sc)
    angle = _pattern_angle(rng)
    u, v = _rotated(size, angle, rng.uniform(0, pitch), 0.0)
    k = np.floor(u / pitch).astype(np.int32)
    t = u - k * pitch
    kidx = k - k.min()
    reach = int(math.ceil((size - 1) / 2 * math.sqrt(2))) + 2
    vi = np.clip(np.rint(v + reach).astype(np.int32), 0, 2 * reach)
    ler = rng.uniform(0.1, 0.4) * sc
    corr = rng.uniform(4, 12) * sc
    tables = ler * _noise_rows(rng, 2 * (int(kidx.max()) + 1), 2 * reach + 1, corr)
    left = tables[0::2][kidx, vi]
    right = tables[1::2][kidx, vi]
    return Grating(pitch, duty * pitch / 2, sidewall, u, v, k, t, left, right)


@dataclass
class HoleArray:
    """A contact/via hole array; holes are re-renderable with edited radii (missing, undersized)."""

    px: float
    py: float
    sidewall: float
    angle: float
    du: float
    dv: float
    hexagonal: bool
    iy: np.ndarray       # table row of each pixel's nearest hole
    ix: np.ndarray
    iy0: int             # lattice index of table row 0
    ix0: int
    dist: np.ndarray     # distance of each pixel from its nearest hole's centre
    cu: np.ndarray       # table of hole centres in pattern coordinates
    cv: np.ndarray
    radius: np.ndarray   # table of hole radii

    def height(self, radius: np.ndarray | None = None) -> np.ndarray:
        """Topography: 1 on the surface, 0 at hole bottoms, with a `radius` table that may be edited."""
        r = self.radius if radius is None else radius
        return _ramp((self.dist - r[self.iy, self.ix]) / self.sidewall)

    def to_pixel(self, u: float, v: float, size: int) -> tuple[float, float]:
        """Pattern coordinates -> pixel (x, y), the inverse of _rotated."""
        c = (size - 1) / 2
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u, v = u - self.du, v - self.dv
        return c + u * ca - v * sa, c + u * sa + v * ca


def _make_holes(rng: np.random.Generator, size: int) -> HoleArray:
    """A random square or hexagonal hole array with small placement and size variation per hole."""
    sc = size / REFERENCE_SIZE
    px = rng.uniform(10, 24) * sc
    hexagonal = bool(rng.random() < 0.4)
    if hexagonal:
        py = px * math.sqrt(3) / 2 * rng.uniform(0.95, 1.05)
    else:
        py = px * rng.choice([1.0, rng.uniform(0.85, 1.2)])
    angle = 0.0 if rng.random() < 0.7 else (math.pi / 4 if rng.random() < 0.5 else float(rng.uniform(0, math.pi)))
    du, dv = rng.uniform(0, px), rng.uniform(0, py)
    u, v = _rotated(size, angle, du, dv)
    iy = np.rint(v / py).astype(np.int32)
    shift = ((iy % 2) * (px / 2)).astype(np.float32) if hexagonal else np.float32(0.0)
    ix = np.rint((u - shift) / px).astype(np.int32)
    iy0, ix0 = int(iy.min()), int(ix.min())
    iy, ix = iy - iy0, ix - ix0
    ny, nx = int(iy.max()) + 1, int(ix.max()) + 1
    jitter = rng.uniform(0, 0.35) * sc
    rows = np.arange(ny)[:, None] + iy0
    cols = np.arange(nx)[None, :] + ix0
    stagger = (rows % 2) * px / 2 if hexagonal else 0
    cu = (cols * px + stagger + jitter * rng.standard_normal((ny, nx))).astype(np.float32)
    cv = (rows * py + jitter * rng.standard_normal((ny, nx))).astype(np.float32)
    r = rng.uniform(0.22, 0.36) * min(px, py)
    radius = (r * (1 + rng.uniform(0, 0.05) * rng.standard_normal((ny, nx)))).astype(np.float32)
    ell = np.float32(rng.uniform(0.92, 1.08))
    dist = np.hypot((u - cu[iy, ix]) * ell, (v - cv[iy, ix]) / ell)
    sidewall = max(0.5, rng.uniform(0.6, 1.4) * sc)
    return HoleArray(px, py, sidewall, angle, float(du), float(dv), hexagonal, iy, ix, iy0, ix0, dist, cu, cv, radius)


def _make_scene(class_name: str, rng: np.random.Generator, size: int) -> Scene:
    """Draw the defect-free wafer area for a class: background kind, geometry, materials, data bar."""
    kind = _choose(rng, BACKGROUND_WEIGHTS[class_name])
    bar = int(round(rng.uniform(0.09, 0.14) * size)) if rng.random() < 0.3 else 0
    detector = float(rng.uniform(0, 2 * math.pi))
    zeros = np.zeros((size, size), np.float32)
    if kind == "grating":
        geom: object = _make_grating(rng, size, class_name)
        low = rng.uniform(0.12, 0.4)
        high = low + rng.uniform(0.1, 0.4)
        texture = 0.02 * _smooth_noise(rng, (size, size), size / 3)
        height = geom.height()
    elif kind == "holes":
        geom = _make_holes(rng, size)
        high = rng.uniform(0.35, 0.7)
        low = high * rng.uniform(0.15, 0.5)
        texture = 0.02 * _smooth_noise(rng, (size, size), size / 3)
        height = geom.height()
    else:
        # A blank film: mostly polished and smooth with faint haze and sometimes polishing streaks; a
        # minority grainy (deposited metal, poly-Si), whose grain boundaries show as a network, drawn as
        # the zero crossings of a smooth random field (ridged noise).
        geom = None
        low = high = rng.uniform(0.3, 0.6)
        texture = rng.uniform(0.005, 0.03) * _smooth_noise(rng, (size, size), rng.uniform(2, 6))
        height = np.full((size, size), 0.5, np.float32)
        if rng.random() < 0.3:
            grains = _smooth_noise(rng, (size, size), size / (rng.uniform(2, 6) * size / REFERENCE_SIZE))
            network = np.abs(grains)
            sign = 1 if rng.random() < 0.75 else -1
            texture = texture + sign * rng.uniform(0.02, 0.06) * (network - network.mean())
            height = height + rng.uniform(0.03, 0.08) * network
        if rng.random() < 0.35:
            streaks = _noise_rows(rng, 1, size, rng.uniform(1, 4))[0] * rng.uniform(0.005, 0.02)
            texture = texture + (streaks[None, :] if rng.random() < 0.7 else streaks[:, None])
        texture = texture.astype(np.float32)
    scene = Scene(size, kind, height, zeros, float(low), float(high), texture, bar, detector, geom)
    scene.set_height(height)
    return scene


# ---------------------------------------------------------------------------------------------------------
# Defects: each edits the scene and returns (mask of where the defect is, variant name)


def _changed(old: np.ndarray, new: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    return np.abs(new - old) > threshold


def _add_bridge(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Material joining neighbouring lines across a space: a necked, sometimes tilted or partial-height link."""
    g: Grating = scene.geom
    old = scene.height
    new = old.copy()
    # Bridging comes from a process drifting out of its window, so it strikes many places at once.
    for _ in range(_count(rng, difficulty, 8, 20)):
        s = _strength(rng, difficulty)
        x, y = scene.pick_point(rng, g.pitch + 4)
        # One space, or material smeared across several neighbouring spaces (and the lines between them).
        spaces = int(rng.choice([1, 1, 1, 2, 3]))
        uc = (round(float(g.u[y, x]) / g.pitch) + (spaces - 1) / 2) * g.pitch  # spaces sit on cell boundaries
        v0 = float(g.v[y, x])
        across = (spaces - 1) * g.pitch / 2 + g.gap_half
        half_len = 1.5 * scene.scale + rng.uniform(0.8, 1.6) * s * max(g.half_width, 2.0 * scene.scale)
        neck = rng.uniform(0.0, 0.4)
        skew = rng.uniform(-0.5, 0.5)
        ys, xs = _patch(scene.size, x, y, half_len + across * 1.6 + g.pitch + 2)
        du = g.u[ys, xs] - uc
        lh = half_len * (1 - neck * (1 - np.minimum(np.abs(du) / across, 1) ** 2))
        along = _ramp((lh - np.abs(g.v[ys, xs] - v0 - skew * du)) / g.sidewall)
        shape = along * _ramp((across + 1.0 - np.abs(du)) / g.sidewall)
        new[ys, xs] = np.maximum(new[ys, xs], (0.8 + 0.2 * s) * shape)
    scene.set_height(new)
    return _changed(old, new), "bridge"


def _add_open(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """A break in a line, with rounded line ends; sometimes a deep notch that nearly severs it."""
    g: Grating = scene.geom
    old = scene.height
    new = old.copy()
    variant = "break" if rng.random() < 0.8 else "notch"
    # Like bridging, opens come from a process out of its window: many lines break at once.
    for _ in range(_count(rng, difficulty, 8, 20)):
        s = _strength(rng, difficulty)
        x, y = scene.pick_point(rng, g.pitch + 4)
        uc = (math.floor(float(g.u[y, x]) / g.pitch) + 0.5) * g.pitch
        v0 = float(g.v[y, x])
        half_len = (1.5 + rng.uniform(1.0, 3.5) * s) * scene.scale + rng.uniform(0.2, 0.8) * g.half_width * s
        flare = rng.uniform(0.3, 1.0) * g.half_width
        skew = rng.uniform(-0.4, 0.4)
        reach = g.half_width + min(1.5, g.gap_half)
        ys, xs = _patch(scene.size, x, y, half_len + flare + reach * 1.5 + g.pitch + 2)
        du = g.u[ys, xs] - uc
        lh = half_len + flare * (np.minimum(np.abs(du) / g.half_width, 1) ** 2)
        cut = _ramp((lh - np.abs(g.v[ys, xs] - v0 - skew * du)) / g.sidewall) * _ramp((reach - np.abs(du)) / g.sidewall)
        if variant == "notch":
            side = 1.0 if rng.random() < 0.5 else -1.0
            depth = rng.uniform(0.65, 0.9)
            cut = cut * _ramp((side * du - g.half_width * (1 - 2 * depth)) / g.sidewall)
        new[ys, xs] = np.minimum(new[ys, xs], 1 - cut)
    scene.set_height(new)
    return _changed(old, new), variant


def _add_ler(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Line-edge roughness far above the grating's normal level, over the whole field or one region."""
    g: Grating = scene.geom
    s = _strength(rng, difficulty)
    size = scene.size
    amp = (1.0 + 1.8 * s) * scene.scale
    corr = rng.uniform(2, 6) * scene.scale
    reach = int(math.ceil((size - 1) / 2 * math.sqrt(2))) + 2
    kidx = g.k - g.k.min()
    vi = np.clip(np.rint(g.v + reach).astype(np.int32), 0, 2 * reach)
    tables = amp * _noise_rows(rng, 2 * (int(kidx.max()) + 1), 2 * reach + 1, corr)
    if rng.random() < 0.85:
        envelope: np.ndarray | float = 1.0
        variant = "global"
    else:
        x, y = scene.pick_point(rng, 16 * scene.scale)
        yy, xx = _grid(size)
        radius = rng.uniform(30, 55) * scene.scale
        envelope = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius ** 2))
        variant = "regional"
    old = scene.height
    new = g.height(envelope * tables[0::2][kidx, vi], envelope * tables[1::2][kidx, vi])
    scene.set_height(new)
    return _dilate(_changed(old, new, 0.2)), variant


def _add_particle(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """A compact particle on top of whatever is there: bright faceted body, bright rim, shadow or halo."""
    size = scene.size
    yy, xx = _grid(size)
    mask = np.zeros((size, size), bool)
    for _ in range(_count(rng, difficulty, 4, 12)):
        s = _strength(rng, difficulty)
        radius = (3.0 + rng.uniform(0.4, 1.0) * 7 * s) * scene.scale
        x, y = scene.pick_point(rng, radius + 2)
        ys, xs = _patch(size, x, y, radius * 4)
        dx, dy = xx[ys, xs] - x, yy[ys, xs] - y
        rho = _blob(rng, dx, dy, radius, rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.4), rng.uniform(0, np.pi))
        inside = _ramp((1 - rho) * radius / 0.8)
        dome = np.sqrt(np.clip(1 - rho ** 2, 0, 1))
        h = scene.height[ys, xs]
        scene.height[ys, xs] = np.maximum(h, inside * (1.0 + rng.uniform(0.6, 1.5) * dome))
        facets = 1 + 0.2 * _smooth_noise(rng, inside.shape, max(2.0, radius / 2))
        body = (scene.high * rng.uniform(1.3, 1.8) + 0.2 * s) * facets
        scene.material[ys, xs] = scene.material[ys, xs] * (1 - inside) + inside * body
        # Shadow on the side away from the side detector; charging halo around insulating particles.
        off = radius * rng.uniform(0.5, 1.0)
        sx, sy = x - off * math.cos(scene.detector), y - off * math.sin(scene.detector)
        srho = np.hypot(xx[ys, xs] - sx, yy[ys, xs] - sy) / (radius * 1.1)
        shadow = np.clip(1.5 - srho, 0, 1) * (1 - inside)
        scene.gain[ys, xs] *= 1 - rng.uniform(0.2, 0.6) * shadow
        if rng.random() < 0.5:
            halo = np.exp(-np.maximum(rho - 1, 0) * rng.uniform(1.0, 3.0)) * (1 - inside)
            scene.extra[ys, xs] += rng.uniform(0.05, 0.2) * halo
        mask[ys, xs] |= inside > 0.5
    return mask, "particle"


def _add_contamination(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Irregular, diffuse residue stains (often several) that darken, partly bury the pattern, leave rims."""
    size = scene.size
    yy, xx = _grid(size)
    s = _strength(rng, difficulty)
    shape = np.full((size, size), -1.0, np.float32)
    for _ in range(_count(rng, difficulty, 3, 8)):
        radius = rng.uniform(8, 12 + 22 * s) * scene.scale
        x, y = scene.pick_point(rng, radius * 0.6)
        aspect = rng.uniform(0.6, 1.6)
        a = rng.uniform(0, np.pi)
        ca, sa = math.cos(a), math.sin(a)
        u = ((xx - x) * ca + (yy - y) * sa) / (radius * aspect)
        v = (-(xx - x) * sa + (yy - y) * ca) / radius
        shape = np.maximum(shape, 1 - (u * u + v * v))
    ragged = _smooth_noise(rng, (size, size), rng.uniform(5, 12))
    stain = _ramp((shape + 0.35 * ragged) / rng.uniform(0.15, 0.5))
    stain[scene.usable:] = 0
    mottle = 1 + 0.4 * _smooth_noise(rng, (size, size), size / 6)
    bury = rng.uniform(0.2, 0.7) * stain
    scene.set_height(scene.height * (1 - bury) + bury * float(scene.height.mean()))
    if rng.random() < 0.9:
        variant = "dark"
        scene.gain *= 1 - (0.15 + 0.45 * s) * stain * mottle
    else:
        variant = "bright"
        scene.extra += (0.05 + 0.15 * s) * stain * mottle
    if rng.random() < 0.4:
        variant += "+rim"
        scene.gain *= 1 - rng.uniform(0.2, 0.5) * 4 * stain * (1 - stain)
    return stain > 0.3, variant


def _crack_path(rng: np.random.Generator, scene: Scene, start: np.ndarray, heading: float, length: float,
                width: float) -> tuple[np.ndarray, np.ndarray]:
    """A jagged random walk that keeps a general direction, as brittle fractures do, with tapering width."""
    step = rng.uniform(2.5, 6) * scene.scale
    n = max(2, int(length / step))
    turns = rng.normal(0, 0.55, n)
    angles = heading + np.cumsum(turns) * 0.5
    angles = heading + 0.6 * (angles - heading)
    pts = np.empty((n + 1, 2))
    pts[0] = start
    pts[1:] = start + np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * step, axis=0)
    widths = width * np.linspace(1.0, rng.uniform(0.35, 0.8), n)
    return pts, widths


def _add_crack(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """A thin dark branching fracture that crosses features; its lips show as a faint bright rim."""
    size = scene.size
    s = _strength(rng, difficulty)
    width = (1.4 + 1.8 * s) * scene.scale
    from_border = rng.random() < 0.7
    if from_border:
        # Enter from a border, head across the field.
        side = int(rng.integers(4))
        t = rng.uniform(0.15, 0.85) * size
        start = np.array([[t, 0], [size - 1, t], [t, scene.usable - 1], [0, t]][side], float)
        heading = [math.pi / 2, math.pi, -math.pi / 2, 0.0][side] + rng.uniform(-0.6, 0.6)
        length = rng.uniform(0.7, 1.4) * size
    else:
        x, y = scene.pick_point(rng, size / 4)
        start = np.array([x, y], float)
        heading = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.35, 0.7) * size
    main_pts, main_w = _crack_path(rng, scene, start, heading, length, width)
    paths = [(main_pts, main_w)]
    if not from_border and rng.random() < 0.5:
        # Cracks starting inside often run both ways from the origin.
        paths.append(_crack_path(rng, scene, start, heading + math.pi, length * 0.6, width))
    for _ in range(int(rng.choice([2, 3, 3, 4, 5]))):
        i = int(rng.integers(1, len(main_pts) - 1)) if len(main_pts) > 2 else 0
        seg = main_pts[min(i + 1, len(main_pts) - 1)] - main_pts[i]
        base = math.atan2(seg[1], seg[0])
        turn = rng.uniform(0.5, 1.2) * (1 if rng.random() < 0.5 else -1)
        paths.append(_crack_path(rng, scene, main_pts[i], base + turn, length * rng.uniform(0.15, 0.45),
                                 main_w[min(i, len(main_w) - 1)] * 0.7))
    cover = _draw_paths(size, paths)
    cover[scene.usable:] = 0
    # The lips of the fracture are slopes (bright edges); electrons from inside the gap rarely escape, so
    # the gap itself is dark whatever the edge effect would give: a gain, not a material.
    scene.set_height(scene.height - rng.uniform(0.15, 0.5) * cover)
    scene.gain *= 1 - (0.7 + 0.25 * s) * cover
    return cover > 0.5, "crack"


def _arc(rng: np.random.Generator, size: int, usable: int) -> np.ndarray:
    """Points of a long, gently curved chord across the field: a scratch dragged by the polishing pad."""
    a = rng.uniform(0, 2 * math.pi)
    d = np.array([math.cos(a), math.sin(a)])
    n = np.array([-d[1], d[0]])
    c = np.array([rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * usable])
    half = size * 0.75
    t = np.linspace(-1, 1, 25)[:, None]
    # Some scratches start or end inside the field; every one passes through its centre point c.
    t0, t1 = (rng.uniform(-1, -0.2), rng.uniform(0.2, 1)) if rng.random() < 0.3 else (-1.0, 1.0)
    t = t0 + (t + 1) / 2 * (t1 - t0)
    sag = rng.uniform(-0.15, 0.15) * size
    return c + t * half * d + (1 - t ** 2) * sag * n


def _add_cmp(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """CMP damage: long shallow scratches (some as chatter marks), dishing/erosion patches, slurry residue."""
    size = scene.size
    sc = scene.scale
    s = _strength(rng, difficulty)
    yy, xx = _grid(size)
    variant = _choose(rng, {"scratch": 0.45, "dishing": 0.25, "slurry": 0.3})
    if variant == "scratch":
        paths = []
        base = _arc(rng, size, scene.usable)
        bundle = int(rng.choice([1, 2, 2, 3, 4]))
        normal = np.array([-(base[-1] - base[0])[1], (base[-1] - base[0])[0]])
        normal /= np.linalg.norm(normal) + 1e-9
        for j in range(bundle):
            pts = base + normal * j * rng.uniform(2, 6) * sc if j else base
            if bundle == 1 and rng.random() < 0.3:
                pts = _arc(rng, size, scene.usable)
            w = (1.6 + 1.6 * s * rng.uniform(0.5, 1.0)) * sc
            if rng.random() < 0.25:
                # Chatter: the pad skips, leaving a dotted line of pits.
                for i in range(0, len(pts) - 1, 2):
                    paths.append((pts[i:i + 2], np.full(1, w * 1.6)))
                variant = "chatter"
            else:
                paths.append((pts, np.full(len(pts) - 1, w)))
        cover = _draw_paths(size, paths)
        cover[scene.usable:] = 0
        if scene.kind == "grating":
            # Across a pattern the scratch gouges the line tops, which shows more than the shallow groove.
            scene.set_height(scene.height * (1 - (0.5 + 0.4 * s) * cover))
        else:
            # A polished film is flat and dim: the groove shows by its walls and its torn, darker floor.
            scene.set_height(scene.height - (0.4 + 0.4 * s) * cover)
        scene.material = scene.material * (1 - (0.6 + 0.35 * s) * cover)
        return cover > 0.2, variant
    if variant == "dishing":
        radius = rng.uniform(22, 42) * sc
        x, y = scene.pick_point(rng, radius * 0.4)
        rho = _blob(rng, xx - x, yy - y, radius, 0.3, rng.uniform(0.6, 1.6), rng.uniform(0, np.pi))
        patch = _ramp((1 - rho) * radius / (rng.uniform(6, 14) * sc))
        patch[scene.usable:] = 0
        if scene.kind == "grating":
            # Erosion of a dense array: the lines are polished thinner, so they lose contrast.
            scene.set_height(scene.height * (1 - (0.3 + 0.5 * s) * patch))
        else:
            scene.set_height(scene.height - (0.1 + 0.25 * s) * patch)
        scene.gain *= 1 - (0.2 + 0.25 * s) * patch
        return patch > 0.5, variant
    # Slurry residue: clusters of abrasive grains (bright specks) on a faint film.
    specks = np.zeros((size, size), np.float32)
    film = np.zeros((size, size), np.float32)
    for _ in range(int(rng.choice([1, 2, 2, 3]))):
        x, y = scene.pick_point(rng, 10 * sc)
        spread = rng.uniform(6, 16) * sc
        n = int(rng.integers(15, 45))
        px_ = np.clip(np.rint(x + spread * rng.standard_normal(n)), 0, size - 1).astype(int)
        py_ = np.clip(np.rint(y + spread * rng.standard_normal(n)), 0, scene.usable - 1).astype(int)
        np.add.at(specks, (py_, px_), rng.uniform(0.6, 1.0, n).astype(np.float32))
        film += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (spread * 1.5) ** 2))
    # On a grating, grains as fine as its line edges would vanish among them: those that show are coarser.
    sigma = (0.9 if scene.kind == "grating" else 0.5) * sc + 0.2
    specks = np.minimum(_blur(specks, sigma) * (2 * math.pi * sigma ** 2), 1.0)  # a lone grain peaks near 1
    film = np.minimum(film, 1.0)
    scene.set_height(scene.height + (0.5 + 0.5 * s) * specks)
    scene.material = scene.material + (0.3 + 0.3 * s) * specks
    scene.gain *= 1 - 0.1 * s * film
    return _dilate(specks > 0.25), variant


def _capsule_hole(h: np.ndarray, ha: HoleArray, a: tuple[float, float], b: tuple[float, float],
                  radius: float) -> np.ndarray:
    """Cut a capsule (two holes merged by an etch bridge) between pixel points a and b."""
    yy, xx = _grid(h.shape[0])
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = np.clip(((xx - a[0]) * abx + (yy - a[1]) * aby) / (abx * abx + aby * aby + 1e-9), 0, 1)
    d = np.hypot(xx - a[0] - t * abx, yy - a[1] - t * aby)
    return np.minimum(h, _ramp((d - radius) / ha.sidewall))


def _irregular_hole(h: np.ndarray, ha: HoleArray, rng: np.random.Generator, centre: tuple[float, float],
                    radius: float, roughness: float, aspect: float) -> np.ndarray:
    """Cut a misshapen hole: elongated and with a wavy outline."""
    yy, xx = _grid(h.shape[0])
    ys, xs = _patch(h.shape[0], centre[0], centre[1], radius * 2.5)
    rho = _blob(rng, xx[ys, xs] - centre[0], yy[ys, xs] - centre[1], radius, roughness, aspect,
                rng.uniform(0, np.pi))
    out = h.copy()
    out[ys, xs] = np.minimum(h[ys, xs], _ramp((rho - 1) * radius / ha.sidewall))
    return out


def _shallow_hole(h: np.ndarray, ha: HoleArray, j: int, i: int, floor: float) -> np.ndarray:
    """Raise the floor of hole (j, i): an under-etched contact that did not reach the layer below."""
    return np.where((ha.iy == j) & (ha.ix == i), np.maximum(h, floor), h)


def _add_via(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Faulty holes in the array: missing, undersized, merged with a neighbour, misshapen or not etched through."""
    ha: HoleArray = scene.geom
    size = scene.size
    old = scene.height
    radius = ha.radius.copy()
    # Radius edits go into the hole table; shape edits are cut into the re-rendered array afterwards.
    shape_edits: list[Callable[[np.ndarray], np.ndarray]] = []
    kinds = []
    for _ in range(_count(rng, difficulty, 6, 16)):
        s = _strength(rng, difficulty)
        x, y = scene.pick_point(rng, max(ha.px, ha.py) * 0.8)
        j, i = int(ha.iy[y, x]), int(ha.ix[y, x])
        r0 = float(ha.radius[j, i])
        kind = _choose(rng, {"missing": 0.3, "undersized": 0.2, "merged": 0.25, "misshapen": 0.15, "shallow": 0.1})
        kinds.append(kind)
        centre = ha.to_pixel(float(ha.cu[j, i]), float(ha.cv[j, i]), size)
        if kind == "missing":
            radius[j, i] = -1e3
        elif kind == "undersized":
            radius[j, i] = r0 * (0.2 + 0.35 * (1 - s))
        elif kind == "merged":
            nj, ni = (j, i + 1) if rng.random() < 0.6 or j + 1 >= ha.cu.shape[0] else (j + 1, i)
            ni = min(ni, ha.cu.shape[1] - 1)
            other = ha.to_pixel(float(ha.cu[nj, ni]), float(ha.cv[nj, ni]), size)
            shape_edits.append(partial(_capsule_hole, ha=ha, a=centre, b=other, radius=r0 * (0.7 + 0.3 * s)))
        elif kind == "misshapen":
            radius[j, i] = -1e3
            shift = rng.normal(0, 0.15 * r0, 2)
            shape_edits.append(partial(
                _irregular_hole, ha=ha, rng=np.random.default_rng(rng.integers(2 ** 63)),
                centre=(centre[0] + shift[0], centre[1] + shift[1]), radius=r0 * rng.uniform(0.8, 1.15),
                roughness=0.25 + 0.5 * s, aspect=1 + rng.uniform(0.1, 0.7) * s))
        else:
            shape_edits.append(partial(_shallow_hole, ha=ha, j=j, i=i, floor=0.6 + 0.35 * s))
    new = ha.height(radius)
    for edit in shape_edits:
        new = edit(new)
    scene.set_height(new)
    return _dilate(_changed(old, new)), "+".join(sorted(set(kinds)))


def _add_other(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Defects outside the nine named classes: pattern collapse, voids, missing pattern, blisters."""
    size = scene.size
    sc = scene.scale
    yy, xx = _grid(size)
    s = _strength(rng, difficulty)
    old = scene.height
    if scene.kind == "grating":
        variant = _choose(rng, {"collapse": 0.35, "voids": 0.15, "missing_pattern": 0.35, "blister": 0.15})
    else:
        variant = _choose(rng, {"voids": 0.6, "blister": 0.4})
    if variant == "collapse":
        # Tall lines lean onto their neighbours in pairs and buckle: the zipper pattern of capillary
        # collapse. Each line is displaced as a whole (both edges together) by a lean that alternates between
        # neighbours and wanders slowly along the line, so pairs touch in places and gape open in others;
        # that wandering, not a roughened edge, is what sets it apart from LER.
        g: Grating = scene.geom
        x, y = scene.pick_point(rng, 10 * sc)
        radius = rng.uniform(35, 60) * sc * (0.7 + 0.5 * s)
        env = np.minimum(1.6 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius ** 2)), 1.0)
        reach = int(math.ceil((size - 1) / 2 * math.sqrt(2))) + 2
        kidx = g.k - g.k.min()
        vi = np.clip(np.rint(g.v + reach).astype(np.int32), 0, 2 * reach)
        wander = _noise_rows(rng, int(kidx.max()) + 1, 2 * reach + 1, rng.uniform(8, 16) * sc)[kidx, vi]
        side = np.where(g.k % 2 == 0, 1.0, -1.0).astype(np.float32)
        lean = (g.gap_half + 0.6) * env * (0.7 * side + 0.6 * wander)
        new = g.height(-lean, lean, touch=True)
        scene.set_height(new)
        return _changed(old, new, 0.3), variant
    if variant == "missing_pattern":
        radius = rng.uniform(16, 34) * sc * (0.7 + 0.5 * s)
        x, y = scene.pick_point(rng, radius * 0.5)
        rho = _blob(rng, xx - x, yy - y, radius, 0.5, rng.uniform(0.6, 1.6), rng.uniform(0, np.pi))
        region = _ramp((1 - rho) * radius / 1.5)
        region[scene.usable:] = 0
        level = 0.0 if rng.random() < 0.7 else 1.0
        new = old * (1 - region) + level * region
        scene.set_height(new)
        return _changed(old, new), variant
    mask = np.zeros((size, size), bool)
    if variant == "voids":
        # Pits in the film: deep and dark (few secondary electrons escape), with a bright rim.
        for _ in range(_count(rng, difficulty, 6, 16)):
            radius = (2.5 + rng.uniform(0.3, 1.0) * 5 * s) * sc
            x, y = scene.pick_point(rng, radius + 2)
            ys, xs = _patch(size, x, y, radius * 2)
            rho = _blob(rng, xx[ys, xs] - x, yy[ys, xs] - y, radius, rng.uniform(0.1, 0.4), rng.uniform(0.8, 1.3))
            inside = _ramp((1 - rho) * radius / 0.8)
            scene.height[ys, xs] = scene.height[ys, xs] * (1 - inside) - 0.6 * inside
            scene.gain[ys, xs] *= 1 - rng.uniform(0.75, 0.95) * inside
            mask[ys, xs] |= inside > 0.5
        return mask, variant
    # Blister: film lifted into a smooth dome, brighter from charging, the pattern showing through.
    radius = rng.uniform(14, 32) * sc * (0.7 + 0.5 * s)
    x, y = scene.pick_point(rng, radius * 0.7)
    rho = _blob(rng, xx - x, yy - y, radius, 0.15, rng.uniform(0.7, 1.4), rng.uniform(0, np.pi))
    # The lifted film rises steeply at its rim (a bright ring from the edge effect) and charges on top.
    dome = np.sqrt(np.clip(1 - rho ** 2, 0, 1))
    dome[scene.usable:] = 0
    scene.set_height(old + (0.8 + 0.6 * s) * dome)
    # On a pattern the dome's own edge glow competes with every line edge: it shows by its charging.
    scene.extra += ((0.14 + 0.2 * s) if scene.kind == "grating" else (0.06 + 0.1 * s)) * dome
    return dome > 0.2, variant


DEFECTS: dict[str, Callable[[Scene, np.random.Generator, float], tuple[np.ndarray, str]]] = {
    "Bridge": _add_bridge,
    "cmp": _add_cmp,
    "contamination": _add_contamination,
    "crack": _add_crack,
    "ler": _add_ler,
    "opens": _add_open,
    "other": _add_other,
    "particle": _add_particle,
    "via": _add_via,
}


# ---------------------------------------------------------------------------------------------------------
# Imaging: the scene seen through a secondary-electron detector


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


def _render(scene: Scene, rng: np.random.Generator, difficulty: float, exclude: np.ndarray) -> np.ndarray:
    """Form the SEM image of a scene: SE signal, beam blur, charging, scan jitter, shot noise, data bar.

    Brightness and contrast are set from the pixels outside `exclude` (the defect), as an operator sets
    them on a defect-free area: so a defect changes its own pixels, not the exposure of the whole image.
    """
    size, sc = scene.size, scene.scale
    h = _blur(scene.height, 0.5 * sc + 0.2)
    gy, gx = np.gradient(h)
    gx *= sc
    gy *= sc
    slope = np.sqrt(gx * gx + gy * gy)
    # Edge effect: tilted surfaces emit more secondary electrons; slopes facing the detector more still.
    edge = rng.uniform(1.0, 2.6)
    facing = rng.uniform(0.0, 0.8) * edge
    signal = scene.material + edge * slope + facing * (gx * math.cos(scene.detector) + gy * math.sin(scene.detector))
    signal = signal * scene.gain + scene.extra
    signal = _blur(signal, (rng.uniform(0.3, 0.9) + 0.6 * difficulty * rng.random()) * sc)
    # Charging and detector drift: a slow brightness gradient over the field.
    yy, xx = _grid(size)
    a = rng.uniform(0, 0.3)
    phi = rng.uniform(0, 2 * math.pi)
    ramp = ((xx * math.cos(phi) + yy * math.sin(phi)) / size).astype(np.float32)
    signal = signal * (1 + a * (ramp - ramp.mean()) + rng.uniform(0, 0.1) * _smooth_noise(rng, (size, size), 2.5))
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
    noise = rng.standard_normal((size, size)).astype(np.float32)
    if rng.random() < 0.4:
        noise = _blur(noise, rng.uniform(0.5, 1.0), axes=(1,)) * 1.8
    k = rng.uniform(0.2, 0.6) + difficulty * rng.uniform(0, 1.4)
    img = img + noise * np.sqrt(np.maximum(img, 1.0) * k)
    img += rng.normal(0, rng.uniform(0, 2) + 3 * difficulty * rng.random(), size).astype(np.float32)[:, None]
    if scene.bar:
        img[scene.usable:] = _data_bar(rng, size, scene.bar)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Public API


def image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The random stream of one image, so that it does not depend on which images were made before it."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


def generate_image(class_name: str, rng: np.random.Generator, size: int = 128, difficulty: float = 0.5,
                   defect: bool = True) -> tuple[np.ndarray, dict]:
    """One synthetic SEM image of `class_name`: a uint8 (size, size) array and an info dict.

    info: "defect_mask" (bool, True where the defect was put; all False for clean), "background"
    ("grating", "holes" or "blank"), "data_bar" (bool), "bar_rows", "variant" (the defect's sub-type).
    The scene, the defect and the imaging draw from separate child streams of `rng`, so `defect=False`
    gives the very same image without the defect: the control that tests and paired studies need.
    """
    if class_name not in CLASS_NAMES:
        raise UsageError(f"unknown class {class_name!r}; expected one of {', '.join(CLASS_NAMES)}")
    if size < MIN_SIZE:
        raise UsageError(f"size must be at least {MIN_SIZE}, got {size}")
    if not 0.0 <= difficulty <= 1.0:
        raise UsageError(f"difficulty must be between 0 and 1, got {difficulty}")
    scene_rng, defect_rng, render_rng = rng.spawn(3)
    scene = _make_scene(class_name, scene_rng, size)
    mask = np.zeros((size, size), bool)
    variant = None
    if class_name in DEFECTS:
        # A draw can leave no visible trace (a sub-pixel change at a small size): draw again, a few times.
        for _ in range(3):
            target = scene.copy()
            mask, variant = DEFECTS[class_name](target, defect_rng, difficulty)
            mask[scene.usable:] = False
            if mask.any():
                break
        # Without the defect the exposure is still set from the same pixels, so the pair differs only there.
        if defect:
            scene = target
    image = _render(scene, render_rng, difficulty, exclude=_dilate(mask, 2))
    if not defect:
        mask = np.zeros((size, size), bool)
    info = {"defect_mask": mask, "background": scene.kind, "data_bar": scene.bar > 0, "bar_rows": scene.bar,
            "variant": variant}
    return image, info


def split_counts(per_class: int, split: tuple[int, int, int]) -> tuple[int, int, int]:
    """Images per split for one class, exact from the percentages: floors, then the remaining images to
    the largest remainders (earlier splits win ties). 20 at 70/15/15 -> 14/3/3."""
    floors = [per_class * r // 100 for r in split]
    rests = [per_class * r % 100 for r in split]
    for i in sorted(range(3), key=lambda i: (-rests[i], i))[: per_class - sum(floors)]:
        floors[i] += 1
    return floors[0], floors[1], floors[2]


def write_png(image: np.ndarray | Image.Image, path: Path) -> None:
    """Write a PNG atomically (temporary name in the same folder, then rename): a crash leaves the old
    file or the new one, never half. Pillow writes no time or path chunks, so the bytes depend on the
    pixels alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate_dataset(out: Path, per_class: int, size: int, seed: int, split: tuple[int, int, int] | None,
                     difficulty: float) -> list[Path]:
    """Write per_class images of every class under `out` (in split folders if `split`); return the paths.

    Image i of a class is the same picture whatever the split: the split only decides its folder
    (the first images go to train, then val, then test). Files of an earlier run that this run did not
    overwrite are left alone but reported, since they would silently change the dataset.
    """
    out = Path(out)
    check_params(per_class, size, seed, split, difficulty)
    written: list[Path] = []
    for ci, name in enumerate(CLASS_NAMES):
        counts = (per_class,) if split is None else split_counts(per_class, split)
        parents = [out] if split is None else [out / s for s in SPLITS]
        folders = [parent / name for parent, n in zip(parents, counts) for _ in range(n)]
        for i, folder in enumerate(folders):
            image, _ = generate_image(name, image_rng(seed, ci, i), size, difficulty)
            path = folder / f"synth_{name}_{i:05d}.png"
            write_png(image, path)
            written.append(path)
        detail = "" if split is None else " (" + ", ".join(f"{s} {n}" for s, n in zip(SPLITS, counts)) + ")"
        log.info("%s: %d images%s", name, per_class, detail)
    stale = sorted(set(out.rglob("synth_*.png")) - set(written)) if out.is_dir() else []
    if stale:
        log.warning("%d synth_*.png files under %s were not written by this run (left in place), e.g. %s",
                    len(stale), out, stale[0])
    return written


def contact_sheet(seed: int, size: int, difficulty: float, columns: int = SHEET_COLUMNS) -> Image.Image:
    """A grid of the first `columns` images of each class (the same pictures as the files), one labelled row each."""
    thumb = min(size, REFERENCE_SIZE)
    label_w, gap, top = 110, 2, 22
    sheet = Image.new("L", (label_w + columns * (thumb + gap), top + len(CLASS_NAMES) * (thumb + gap)), 255)
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=14)
    except (ImportError, OSError):  # Pillow built without FreeType: the small bitmap font still labels the rows
        font = ImageFont.load_default()
    draw.text((4, 3), f"semdefect.synth  seed {seed}  size {size}  difficulty {difficulty}  images 0-{columns - 1}",
              fill=0, font=font)
    for ci, name in enumerate(CLASS_NAMES):
        y = top + ci * (thumb + gap)
        draw.text((4, y + thumb // 2 - 8), name, fill=0, font=font)
        for i in range(columns):
            image, _ = generate_image(name, image_rng(seed, ci, i), size, difficulty)
            tile = Image.fromarray(image)
            if thumb != size:
                tile = tile.resize((thumb, thumb), Image.Resampling.LANCZOS)
            sheet.paste(tile, (label_w + i * (thumb + gap), y))
    return sheet


def check_params(per_class: int, size: int, seed: int, split: tuple[int, int, int] | None,
                  difficulty: float) -> None:
    if per_class < 0:
        raise UsageError(f"--per-class must be 0 or more, got {per_class}")
    if size < MIN_SIZE:
        raise UsageError(f"--size must be at least {MIN_SIZE}, got {size}")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    if not 0.0 <= difficulty <= 1.0:
        raise UsageError(f"--difficulty must be between 0 and 1, got {difficulty}")
    if split is not None and (len(split) != 3 or sum(split) != 100 or min(split) < 0):
        raise UsageError(f"split must be three non-negative percentages summing to 100, got {split}")
