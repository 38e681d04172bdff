"""The wafer before imaging: a line/space grating, a contact-hole array or a blank film, as maps over the image grid.

A scene holds what the SEM will see (topography, surface material, foreign gain and signal), kept apart from
how it is seen (`render`) so a defect can edit the wafer itself: a bridge adds material between lines, a
missing via leaves a hole unetched, and the imaging then shows them as an SEM would. Gratings and hole arrays
keep their geometry so the defects that edit the pattern can re-render it with moved edges or changed holes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from semdefect.synth.primitives import choose, grid, noise_rows, ramp, smooth_noise

# Scene dimensions are in pixels of a 128-pixel image and scale with the image size.
REFERENCE_SIZE = 128

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
    geom: Grating | HoleArray | None = None  # the background's geometry, for defects that edit the pattern
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

    @property
    def grating(self) -> Grating:
        """The line/space geometry: only the defects drawn on gratings alone (BACKGROUND_WEIGHTS) ask for it."""
        if not isinstance(self.geom, Grating):
            raise TypeError(f"a {self.kind} scene has no grating")
        return self.geom

    @property
    def holes(self) -> HoleArray:
        """The hole-array geometry: only the via defect, drawn on hole arrays alone, asks for it."""
        if not isinstance(self.geom, HoleArray):
            raise TypeError(f"a {self.kind} scene has no hole array")
        return self.geom

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
    y, x = grid(size)
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
        return ramp(np.minimum(a, b))


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
    tables = ler * noise_rows(rng, 2 * (int(kidx.max()) + 1), 2 * reach + 1, corr)
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
        return ramp((self.dist - r[self.iy, self.ix]) / self.sidewall)

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


def make_scene(class_name: str, rng: np.random.Generator, size: int) -> Scene:
    """Draw the defect-free wafer area for a class: background kind, geometry, materials, data bar."""
    kind = choose(rng, BACKGROUND_WEIGHTS[class_name])
    bar = int(round(rng.uniform(0.09, 0.14) * size)) if rng.random() < 0.3 else 0
    detector = float(rng.uniform(0, 2 * math.pi))
    zeros = np.zeros((size, size), np.float32)
    geom: Grating | HoleArray | None
    if kind == "grating":
        grating = _make_grating(rng, size, class_name)
        low = rng.uniform(0.12, 0.4)
        high = low + rng.uniform(0.1, 0.4)
        texture = 0.02 * smooth_noise(rng, (size, size), size / 3)
        height = grating.height()
        geom = grating
    elif kind == "holes":
        holes = _make_holes(rng, size)
        high = rng.uniform(0.35, 0.7)
        low = high * rng.uniform(0.15, 0.5)
        texture = 0.02 * smooth_noise(rng, (size, size), size / 3)
        height = holes.height()
        geom = holes
    else:
        # A blank film: mostly polished and smooth with faint haze and sometimes polishing streaks; a
        # minority grainy (deposited metal, poly-Si), whose grain boundaries show as a network, drawn as
        # the zero crossings of a smooth random field (ridged noise).
        geom = None
        low = high = rng.uniform(0.3, 0.6)
        texture = rng.uniform(0.005, 0.03) * smooth_noise(rng, (size, size), rng.uniform(2, 6))
        height = np.full((size, size), 0.5, np.float32)
        if rng.random() < 0.3:
            grains = smooth_noise(rng, (size, size), size / (rng.uniform(2, 6) * size / REFERENCE_SIZE))
            network = np.abs(grains)
            sign = 1 if rng.random() < 0.75 else -1
            texture = texture + sign * rng.uniform(0.02, 0.06) * (network - network.mean())
            height = height + rng.uniform(0.03, 0.08) * network
        if rng.random() < 0.35:
            streaks = noise_rows(rng, 1, size, rng.uniform(1, 4))[0] * rng.uniform(0.005, 0.02)
            texture = texture + (streaks[None, :] if rng.random() < 0.7 else streaks[:, None])
        texture = texture.astype(np.float32)
    scene = Scene(size, kind, height, zeros, float(low), float(high), texture, bar, detector, geom)
    scene.set_height(height)
    return scene
