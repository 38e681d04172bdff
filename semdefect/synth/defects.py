"""The nine defect classes, each drawn by editing a wafer scene: `DEFECTS` maps a class name to its function.

A defect is made on the wafer, not painted on the image: it changes the scene's topography, material, gain
or extra signal, and the imaging then shows it with the same edge effect, blur and noise as the pattern
around it, so the image gives no pasted-on seams away. Every function has the signature
(scene, rng, difficulty) -> (mask, variant): it edits `scene` in place and returns where the defect is
(a bool mask over the image) and which sub-type it drew. The "clean" class has no entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from semdefect.synth.primitives import (
    blob,
    blur,
    choose,
    dilate,
    draw_paths,
    grid,
    noise_rows,
    patch,
    ramp,
    smooth_noise,
)
from semdefect.synth.scenes import HoleArray, Scene


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



def _changed(old: np.ndarray, new: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Where an edit moved the topography by more than `threshold`: the mask of a defect drawn as a height edit."""
    changed: np.ndarray = np.abs(new - old) > threshold
    return changed


def _add_bridge(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Material joining neighbouring lines across a space: a necked, sometimes tilted or partial-height link."""
    g = scene.grating
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
        ys, xs = patch(scene.size, x, y, half_len + across * 1.6 + g.pitch + 2)
        du = g.u[ys, xs] - uc
        lh = half_len * (1 - neck * (1 - np.minimum(np.abs(du) / across, 1) ** 2))
        along = ramp((lh - np.abs(g.v[ys, xs] - v0 - skew * du)) / g.sidewall)
        shape = along * ramp((across + 1.0 - np.abs(du)) / g.sidewall)
        new[ys, xs] = np.maximum(new[ys, xs], (0.8 + 0.2 * s) * shape)
    scene.set_height(new)
    return _changed(old, new), "bridge"


def _add_open(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """A break in a line, with rounded line ends; sometimes a deep notch that nearly severs it."""
    g = scene.grating
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
        ys, xs = patch(scene.size, x, y, half_len + flare + reach * 1.5 + g.pitch + 2)
        du = g.u[ys, xs] - uc
        lh = half_len + flare * (np.minimum(np.abs(du) / g.half_width, 1) ** 2)
        cut = ramp((lh - np.abs(g.v[ys, xs] - v0 - skew * du)) / g.sidewall) * ramp((reach - np.abs(du)) / g.sidewall)
        if variant == "notch":
            side = 1.0 if rng.random() < 0.5 else -1.0
            depth = rng.uniform(0.65, 0.9)
            cut = cut * ramp((side * du - g.half_width * (1 - 2 * depth)) / g.sidewall)
        new[ys, xs] = np.minimum(new[ys, xs], 1 - cut)
    scene.set_height(new)
    return _changed(old, new), variant


def _add_ler(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Line-edge roughness far above the grating's normal level, over the whole field or one region."""
    g = scene.grating
    s = _strength(rng, difficulty)
    size = scene.size
    amp = (1.0 + 1.8 * s) * scene.scale
    corr = rng.uniform(2, 6) * scene.scale
    reach = int(math.ceil((size - 1) / 2 * math.sqrt(2))) + 2
    kidx = g.k - g.k.min()
    vi = np.clip(np.rint(g.v + reach).astype(np.int32), 0, 2 * reach)
    tables = amp * noise_rows(rng, 2 * (int(kidx.max()) + 1), 2 * reach + 1, corr)
    if rng.random() < 0.85:
        envelope: np.ndarray | float = 1.0
        variant = "global"
    else:
        x, y = scene.pick_point(rng, 16 * scene.scale)
        yy, xx = grid(size)
        radius = rng.uniform(30, 55) * scene.scale
        envelope = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius ** 2))
        variant = "regional"
    old = scene.height
    new = g.height(envelope * tables[0::2][kidx, vi], envelope * tables[1::2][kidx, vi])
    scene.set_height(new)
    return dilate(_changed(old, new, 0.2)), variant


def _add_particle(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """A compact particle on top of whatever is there: bright faceted body, bright rim, shadow or halo."""
    size = scene.size
    yy, xx = grid(size)
    mask = np.zeros((size, size), bool)
    for _ in range(_count(rng, difficulty, 4, 12)):
        s = _strength(rng, difficulty)
        radius = (3.0 + rng.uniform(0.4, 1.0) * 7 * s) * scene.scale
        x, y = scene.pick_point(rng, radius + 2)
        ys, xs = patch(size, x, y, radius * 4)
        dx, dy = xx[ys, xs] - x, yy[ys, xs] - y
        rho = blob(rng, dx, dy, radius, rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.4), rng.uniform(0, np.pi))
        inside = ramp((1 - rho) * radius / 0.8)
        dome = np.sqrt(np.clip(1 - rho ** 2, 0, 1))
        h = scene.height[ys, xs]
        scene.height[ys, xs] = np.maximum(h, inside * (1.0 + rng.uniform(0.6, 1.5) * dome))
        facets = 1 + 0.2 * smooth_noise(rng, inside.shape, max(2.0, radius / 2))
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
    yy, xx = grid(size)
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
    ragged = smooth_noise(rng, (size, size), rng.uniform(5, 12))
    stain = ramp((shape + 0.35 * ragged) / rng.uniform(0.15, 0.5))
    stain[scene.usable:] = 0
    mottle = 1 + 0.4 * smooth_noise(rng, (size, size), size / 6)
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
    cover = draw_paths(size, paths)
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
    points: np.ndarray = c + t * half * d + (1 - t ** 2) * sag * n
    return points


def _add_cmp(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """CMP damage: long shallow scratches (some as chatter marks), dishing/erosion patches, slurry residue."""
    size = scene.size
    sc = scene.scale
    s = _strength(rng, difficulty)
    yy, xx = grid(size)
    variant = choose(rng, {"scratch": 0.45, "dishing": 0.25, "slurry": 0.3})
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
        cover = draw_paths(size, paths)
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
        rho = blob(rng, xx - x, yy - y, radius, 0.3, rng.uniform(0.6, 1.6), rng.uniform(0, np.pi))
        dish = ramp((1 - rho) * radius / (rng.uniform(6, 14) * sc))
        dish[scene.usable:] = 0
        if scene.kind == "grating":
            # Erosion of a dense array: the lines are polished thinner, so they lose contrast.
            scene.set_height(scene.height * (1 - (0.3 + 0.5 * s) * dish))
        else:
            scene.set_height(scene.height - (0.1 + 0.25 * s) * dish)
        scene.gain *= 1 - (0.2 + 0.25 * s) * dish
        return dish > 0.5, variant
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
    specks = np.minimum(blur(specks, sigma) * (2 * math.pi * sigma ** 2), 1.0)  # a lone grain peaks near 1
    film = np.minimum(film, 1.0)
    scene.set_height(scene.height + (0.5 + 0.5 * s) * specks)
    scene.material = scene.material + (0.3 + 0.3 * s) * specks
    scene.gain *= 1 - 0.1 * s * film
    return dilate(specks > 0.25), variant


def _capsule_hole(h: np.ndarray, ha: HoleArray, a: tuple[float, float], b: tuple[float, float],
                  radius: float) -> np.ndarray:
    """Cut a capsule (two holes merged by an etch bridge) between pixel points a and b."""
    yy, xx = grid(h.shape[0])
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = np.clip(((xx - a[0]) * abx + (yy - a[1]) * aby) / (abx * abx + aby * aby + 1e-9), 0, 1)
    d = np.hypot(xx - a[0] - t * abx, yy - a[1] - t * aby)
    cut: np.ndarray = np.minimum(h, ramp((d - radius) / ha.sidewall))
    return cut


def _irregular_hole(h: np.ndarray, ha: HoleArray, rng: np.random.Generator, centre: tuple[float, float],
                    radius: float, roughness: float, aspect: float) -> np.ndarray:
    """Cut a misshapen hole: elongated and with a wavy outline."""
    yy, xx = grid(h.shape[0])
    ys, xs = patch(h.shape[0], centre[0], centre[1], radius * 2.5)
    rho = blob(rng, xx[ys, xs] - centre[0], yy[ys, xs] - centre[1], radius, roughness, aspect,
                rng.uniform(0, np.pi))
    out = h.copy()
    out[ys, xs] = np.minimum(h[ys, xs], ramp((rho - 1) * radius / ha.sidewall))
    return out


def _shallow_hole(h: np.ndarray, ha: HoleArray, j: int, i: int, floor: float) -> np.ndarray:
    """Raise the floor of hole (j, i): an under-etched contact that did not reach the layer below."""
    return np.where((ha.iy == j) & (ha.ix == i), np.maximum(h, floor), h)


def _add_via(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Faulty holes in the array: missing, undersized, merged with a neighbour, misshapen or not etched through."""
    ha = scene.holes
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
        kind = choose(rng, {"missing": 0.3, "undersized": 0.2, "merged": 0.25, "misshapen": 0.15, "shallow": 0.1})
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
    return dilate(_changed(old, new)), "+".join(sorted(set(kinds)))


def _add_other(scene: Scene, rng: np.random.Generator, difficulty: float) -> tuple[np.ndarray, str]:
    """Defects outside the nine named classes: pattern collapse, voids, missing pattern, blisters."""
    size = scene.size
    sc = scene.scale
    yy, xx = grid(size)
    s = _strength(rng, difficulty)
    old = scene.height
    if scene.kind == "grating":
        variant = choose(rng, {"collapse": 0.35, "voids": 0.15, "missing_pattern": 0.35, "blister": 0.15})
    else:
        variant = choose(rng, {"voids": 0.6, "blister": 0.4})
    if variant == "collapse":
        # Tall lines lean onto their neighbours in pairs and buckle: the zipper pattern of capillary
        # collapse. Each line is displaced as a whole (both edges together) by a lean that alternates between
        # neighbours and wanders slowly along the line, so pairs touch in places and gape open in others;
        # that wandering, not a roughened edge, is what sets it apart from LER.
        g = scene.grating
        x, y = scene.pick_point(rng, 10 * sc)
        radius = rng.uniform(35, 60) * sc * (0.7 + 0.5 * s)
        env = np.minimum(1.6 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius ** 2)), 1.0)
        reach = int(math.ceil((size - 1) / 2 * math.sqrt(2))) + 2
        kidx = g.k - g.k.min()
        vi = np.clip(np.rint(g.v + reach).astype(np.int32), 0, 2 * reach)
        wander = noise_rows(rng, int(kidx.max()) + 1, 2 * reach + 1, rng.uniform(8, 16) * sc)[kidx, vi]
        side = np.where(g.k % 2 == 0, 1.0, -1.0).astype(np.float32)
        lean = (g.gap_half + 0.6) * env * (0.7 * side + 0.6 * wander)
        new = g.height(-lean, lean, touch=True)
        scene.set_height(new)
        return _changed(old, new, 0.3), variant
    if variant == "missing_pattern":
        radius = rng.uniform(16, 34) * sc * (0.7 + 0.5 * s)
        x, y = scene.pick_point(rng, radius * 0.5)
        rho = blob(rng, xx - x, yy - y, radius, 0.5, rng.uniform(0.6, 1.6), rng.uniform(0, np.pi))
        region = ramp((1 - rho) * radius / 1.5)
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
            ys, xs = patch(size, x, y, radius * 2)
            rho = blob(rng, xx[ys, xs] - x, yy[ys, xs] - y, radius, rng.uniform(0.1, 0.4), rng.uniform(0.8, 1.3))
            inside = ramp((1 - rho) * radius / 0.8)
            scene.height[ys, xs] = scene.height[ys, xs] * (1 - inside) - 0.6 * inside
            scene.gain[ys, xs] *= 1 - rng.uniform(0.75, 0.95) * inside
            mask[ys, xs] |= inside > 0.5
        return mask, variant
    # Blister: film lifted into a smooth dome, brighter from charging, the pattern showing through.
    radius = rng.uniform(14, 32) * sc * (0.7 + 0.5 * s)
    x, y = scene.pick_point(rng, radius * 0.7)
    rho = blob(rng, xx - x, yy - y, radius, 0.15, rng.uniform(0.7, 1.4), rng.uniform(0, np.pi))
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
