"""Perceptual fingerprints and near-duplicate search: which images are the same picture, transformed.

Why it exists: public SEM sets leak the same picture, resized, re-cropped, re-encoded, re-exposed or re-noised,
across train/val/test, and that inflates accuracy by many points. Byte hashes miss all of these copies.

How, and why that way (each choice measured on the real SEM images of ../shared/data/sem-public, see
benchmarks/bench_duplicates.py):

1. Every image becomes one canonical 64 x 64 grey image (`read_gray`, optional data-bar cut, area resize).
2. Shortlist, all pairs, by blocked matrix products: an 8 x 8 band-passed, standardised thumbnail of each whole
   image against the thumbnails of 100 sub-windows of every other image (each side cut by 0 to `max_crop`, in
   steps of a third of it): a crop is then close to one window. Band-pass removes the shading that every
   capture of one instrument shares. Each image keeps its SHORTLIST best partners above `candidate_threshold`.
3. Re-rank: 16 x 16 thumbnails of 225 windows (steps of a quarter of `max_crop`), either image as the crop;
   the best window must correlate above `window_threshold`, and each image keeps `max_candidates` partners.
4. Align: Lucas-Kanade refinement of the window's four edges (with gain and offset) at 32, then 64 pixels,
   from the best window and from no crop at all (on a periodic pattern a window one period off can win
   at 16 x 16).
5. Score: correlation of the aligned, band-passed 64 x 64 pair once their shared lattice (strong spectral
   lines) is removed. Two different gratings of one pitch align to 0.97 on raw pixels; what tells them apart
   is the defect, the line-edge roughness and the grain, which is what is left after the lattice is removed.
6. Faint pairs (detail under `low_detail`) may also match by their fine-band coherence: added noise pulls a
   faint copy under the threshold of step 5, whose band is carried by the shading and edge glow that all
   captures of one instrument share; a finer ring keeps the grain of the one capture.
7. Or by a lower fine-band coherence when the grain also agrees everywhere: the band-passed correlation of
   each of 4 x 4 tiles, its lower quartile over the tiles. Two distinct captures of a particle on a blank
   wafer share the particle and its glow in one or two tiles, not the grain in the others; a copy shares
   both. (What each step gained on the benchmark is in docs/data-tools.md.)

Not searched: flips, rotations and shears (augmentations, not the copies found in public sets). Near-blank
images (a flat wafer with nothing on it) have only their grain as identity: copies of one re-noised by more
than about 2 grey levels in 100 (or JPEG-encoded hard) cannot be told from another blank capture, and are
usually missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image

from semdefect.config import Prepare

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

CANON = 64            # side of the canonical image all comparisons start from, pixels
COARSE_CELLS = 8      # shortlist thumbnails: 8 x 8 cells ...
COARSE_STEPS = 3      # ... of windows whose edges move in steps of max_crop / 3 (100 windows at 20 %)
WINDOW_CELLS = 16     # re-rank thumbnails: 16 x 16 cells ...
WINDOW_STEPS = 4      # ... of windows whose edges move in steps of max_crop / 4 (225 windows at 20 %)
SHORTLIST = 128       # partners per image kept by the all-pairs search, for the re-rank
ROW_BLOCK = 256       # all-pairs search tile: 256 x 2048 float32 scores = 2 MB, stays in cache while
COLUMN_BLOCK = 2048   # the maximum over windows is folded in
PAIR_BATCH = 256      # pairs aligned at once
STEPS_32 = 3          # Gauss-Newton steps of the alignment at 32 x 32 ...
STEPS_64 = 1          # ... and at 64 x 64
FINE_GATE = 0.5       # pairs below this correlation at 32 x 32 are not refined at 64
PERIODIC_POWER = 5.0  # a spectral bin above this many times the mean power of the pair is lattice
FINE_BAND = (0.15, 0.35)  # ring of the fine-band coherence, cycles per pixel of the 64 x 64 image
FINE_LINE_POWER = 8.0     # a bin of that ring above this many times its mean power is a line or edge, not grain
TILES = 4                 # tile agreement: 4 x 4 tiles of the aligned 64 x 64 pair ...
TILE_QUANTILE = 25        # ... scored by the lower quartile of their correlations (most tiles must agree)


@dataclass(frozen=True)
class DuplicateSettings:
    """What counts as a near-duplicate. The data bar and the workers are config keys (`prepare.*`); the thresholds
    were tuned on the benchmark (benchmarks/bench_duplicates.py) and are not for a user to set."""

    data_bar: str = "auto"
    data_bar_rows: int = 0
    max_crop: float = 0.2
    candidate_threshold: float = 0.5
    window_threshold: float = 0.7
    max_candidates: int = 16
    match_threshold: float = 0.9
    min_detail: float = 0.01
    blank_match_threshold: float = 0.93
    low_detail: float = 0.04
    fine_band_threshold: float = 0.8
    tiled_fine_band_threshold: float = 0.6
    blank_tiled_fine_band_threshold: float = 0.3
    tile_threshold: float = 0.5
    workers: int = 0

    @classmethod
    def from_config(cls, prepare: Prepare) -> DuplicateSettings:
        return cls(data_bar=prepare.data_bar, data_bar_rows=prepare.data_bar_rows, workers=prepare.workers)

    @property
    def threads(self) -> int:
        """Worker threads: `workers`, or one per CPU this process may use."""
        if self.workers > 0:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)


@dataclass
class Fingerprint:
    """What the search keeps of one image: 64 x 64 canonical grey (float16, 8 kB), the data-bar rows it cut
    and its detail (std of the band-passed canonical image, in grey levels 0..1: near 0 for a blank field)."""

    canon: np.ndarray
    bar_rows: int
    detail: float


@dataclass(frozen=True)
class Match:
    """Two images (indices into the fingerprint list) that are the same picture; score in [-1, 1]."""

    a: int
    b: int
    score: float


# ---------------------------------------------------------------------------------------------------------
# One image -> fingerprint


def fingerprint(gray: np.ndarray, settings: DuplicateSettings) -> Fingerprint:
    """Canonical image of a grey float image in [0, 1], after cutting the data bar the settings ask for."""
    rows = 0
    if settings.data_bar == "rows":
        rows = settings.data_bar_rows
    elif settings.data_bar == "auto":
        rows = detect_data_bar(gray)
    if 0 < rows < gray.shape[0]:
        gray = gray[: gray.shape[0] - rows]
    else:
        rows = 0
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))
    canon = np.asarray(image.resize((CANON, CANON), Image.Resampling.BOX), dtype=np.float32)
    detail = float(bandpass(canon, 0.7, 8.0).std())
    return Fingerprint(canon.astype(np.float16), rows, detail)


def detect_data_bar(gray: np.ndarray, max_fraction: float = 0.3) -> int:
    """Rows of an instrument data bar at the bottom of `gray`, or 0.

    A data bar is drawn, not imaged: a band of one flat grey across the whole width, with text and a scale
    bar in a strongly different grey, under an image that is not that flat grey. All three are required:
    a flat dark background with a bright line across it (common in screenshots) is not a bar, and neither
    is the flat bottom of a blank wafer image. JPEG ringing around the text is tolerated (band grey +-6 %).
    Measured: 106 of 108 generated bars found to within 2 rows, also after JPEG at quality 75; no false
    bar in 292 generated images without one; 2 false bars in the 1,317 real images of sem-public.
    """
    height, width = gray.shape
    if height < 24 or width < 24:
        return 0
    background = float(np.median(gray[-3:]))
    distance = np.abs(gray - background)
    near = (distance <= 0.06).mean(axis=1)            # share of each row at the band's grey
    marks = distance >= 0.2                           # text, scale bar, separator line
    drawn = near + marks.mean(axis=1) >= 0.75         # two greys only: band and marks, little in between
    limit = int(height * max_fraction)
    top = height
    for row in range(height - 1, height - 1 - limit, -1):
        if near[row] >= 0.3 and drawn[row]:
            top = row
        elif marks[row].mean() >= 0.9 and row > 0 and marks[row - 1].mean() < 0.9:
            top = row  # a separator line across the top of the band (not the first row of a bright image)
            break
        else:
            break
    rows = height - top
    if rows < max(4, height // 33) or rows >= limit:
        return 0
    band = marks[top:]
    runs = (np.diff(band.astype(np.int8), axis=1) == 1).sum(axis=1)
    # Text: rows crossing several short, separate marks, and rows of pure band between or under them (a
    # grating or a line crossing a flat field has marks in every row; an edge has long ones).
    text_rows = (runs >= 4) & (band.sum(axis=1) <= 0.1 * width * np.maximum(runs, 1))
    has_text = text_rows.sum() >= 2 and (near[top:] >= 0.9).any()
    above = near[max(0, top - 4):top]
    return rows if has_text and len(above) and (above < 0.5).all() else 0


# ---------------------------------------------------------------------------------------------------------
# Linear image operators: area resampling of a window, Gaussian blur, band-pass


def crop_windows(max_crop: float, steps: int) -> list[tuple[float, float]]:
    """(low, high) spans of a side that cut at most `max_crop` in all, on a grid of max_crop / steps.

    The uncropped span (0, 1) comes first, so window 0 of an image's K = len ** 2 windows is the whole image.
    """
    if max_crop <= 0:
        return [(0.0, 1.0)]
    step = max_crop / steps
    return [(i * step, 1.0 - j * step) for i in range(steps + 1) for j in range(steps + 1 - i)]


def area_matrices(low: np.ndarray, high: np.ndarray, cells: int, size: int = CANON) -> np.ndarray:
    """Matrices (m, cells, size) averaging the span [low, high) of a side (fractions) into `cells` bins.

    `A @ image @ B.T` is then the window of the image, area-resampled: exact for any fractional window, one
    matrix product for many windows at once. The overlap of bin [a, b) with pixel [p, p + 1) is
    clip(b - p, 0, 1) - clip(a - p, 0, 1).
    """
    low = np.asarray(low, np.float32)
    high = np.asarray(high, np.float32)
    edges = (low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, cells + 1, dtype=np.float32)) * size
    pixel = np.arange(size, dtype=np.float32)
    cumulative = np.clip(edges[:, :, None] - pixel, 0.0, 1.0)  # (m, cells + 1, size)
    overlap: np.ndarray = cumulative[:, 1:] - cumulative[:, :-1]
    overlap /= np.maximum(overlap.sum(axis=-1, keepdims=True), 1e-6)
    return overlap


@cache
def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """Gaussian blur along one side as a matrix, renormalised at the borders (no dark or bright rim)."""
    x = np.arange(size, dtype=np.float64)
    weights = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
    result: np.ndarray = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


def bandpass(images: np.ndarray, blur: float, shading: float) -> np.ndarray:
    """Light blur (noise, JPEG blocks, resampling) minus heavy blur (shading, charging): the picture's detail."""
    size = images.shape[-1]
    fine, coarse = blur_matrix(size, blur), blur_matrix(size, shading)
    smooth = fine @ images @ fine.T
    result: np.ndarray = smooth - coarse @ smooth @ coarse.T
    return result


def standardise(images: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm over the last two axes, so a dot product is a correlation."""
    centred = images - images.mean(axis=(-2, -1), keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=(-2, -1), keepdims=True))
    result: np.ndarray = centred / np.maximum(norm, 1e-6)
    return result


def window_thumbnails(canon: np.ndarray, windows: Sequence[tuple[float, float]], cells: int,
                      blur: float, shading: float) -> np.ndarray:
    """(n, K, cells*cells) standardised band-passed thumbnails of every window (x span) x (y span).

    The resampling and both blurs are folded into one matrix per span, so all K windows of all n images
    come from four large matrix products instead of n * K small ones.
    """
    fine, coarse = _window_operators(tuple(windows), cells, blur, shading)
    n, side, span = len(canon), len(windows), fine.shape[0]
    pixels = canon.astype(np.float32).reshape(n * CANON, CANON)
    grid = np.zeros((n, span, span), np.float32)
    for operator, sign in ((fine, 1.0), (coarse, -1.0)):
        right = (pixels @ operator.T).reshape(n, CANON, span)
        left = operator @ right.transpose(1, 0, 2).reshape(CANON, n * span)
        grid += sign * left.reshape(span, n, span).transpose(1, 0, 2)
    grid = grid.reshape(n, side, cells, side, cells).transpose(0, 1, 3, 2, 4)
    return standardise(grid).reshape(n, side * side, cells * cells)


@lru_cache(maxsize=16)
def _window_operators(windows: tuple[tuple[float, float], ...], cells: int, blur: float,
                      shading: float) -> tuple[np.ndarray, np.ndarray]:
    """Per span: blur(resample) and shading(blur(resample)), stacked: (side * cells, CANON) each."""
    resample = area_matrices(np.array([w[0] for w in windows]), np.array([w[1] for w in windows]), cells)
    fine = blur_matrix(cells, blur) @ resample
    coarse = blur_matrix(cells, shading) @ fine
    return fine.reshape(-1, CANON), coarse.reshape(-1, CANON)


def sample_windows(images: np.ndarray, windows: np.ndarray, size: int) -> np.ndarray:
    """The window (left, right, top, bottom) of each image, area-resampled to size x size."""
    ax = area_matrices(windows[:, 0], windows[:, 1], size, images.shape[-1])
    ay = area_matrices(windows[:, 2], windows[:, 3], size, images.shape[-1])
    result: np.ndarray = ay @ images @ ax.transpose(0, 2, 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# Search


def find_near_duplicates(prints: Sequence[Fingerprint], settings: DuplicateSettings,
                         progress: bool = False) -> list[Match]:
    """Every pair of fingerprints that is the same picture, sorted by (a, b), a < b."""
    if len(prints) < 2:
        return []
    canon = np.stack([p.canon for p in prints])
    detail = np.array([p.detail for p in prints])
    clock = time.perf_counter()
    with single_threaded_blas():
        pairs = shortlist_pairs(canon, settings, progress)
        log.info("shortlist: %d pairs of %d images in %.1f s", len(pairs), len(prints), time.perf_counter() - clock)
        clock = time.perf_counter()
        query, ref, window, score16 = best_windows(canon, pairs, settings, progress)
        keep = select_candidates(pairs, score16, settings)
        log.info("re-rank: %d pairs to align in %.1f s", len(keep), time.perf_counter() - clock)
        clock = time.perf_counter()
        scores, fine, tiles = align_and_score(canon, query[keep], ref[keep], window[keep], settings, progress)
    pairs = pairs[keep]
    least = np.minimum(detail[pairs[:, 0]], detail[pairs[:, 1]])
    # A near-blank image has only its noise and shading as identity, and distinct blank captures of one
    # instrument reach 0.91: such pairs must score higher.
    blank = least < settings.min_detail
    by_shape = scores >= np.where(blank, settings.blank_match_threshold, settings.match_threshold)
    # Faint pictures drown in added noise at the band the shape score weighs most; the finer band still
    # tells copies from other captures (which share shading and edge glow, not grain). The score reported
    # is the one that decided.
    # Or by a lower coherence when the grain agrees all over the picture, not just where a shared particle or
    # edge sits (step 7).
    tiled = np.where(blank, settings.blank_tiled_fine_band_threshold, settings.tiled_fine_band_threshold)
    by_grain = (least < settings.low_detail) & (
        (fine >= settings.fine_band_threshold) | ((fine >= tiled) & (tiles >= settings.tile_threshold)))
    found = by_shape | by_grain
    scores = np.where(by_shape, scores, fine)
    log.info("aligned and scored: %d near-duplicate pairs in %.1f s", int(found.sum()), time.perf_counter() - clock)
    return [Match(int(a), int(b), round(float(s), 4)) for (a, b), s in zip(pairs[found], scores[found])]


def shortlist_pairs(canon: np.ndarray, settings: DuplicateSettings, progress: bool = False) -> np.ndarray:
    """(m, 2) sorted unique pairs a < b from the all-pairs search (step 2).

    score[a, b] = best over b's windows of (whole a) . (window b), done tile by tile: each of the K window
    products of a tile is folded into the tile's maximum while it is still in cache, and no n x n matrix
    is ever held. A pair is kept when it is among the SHORTLIST best of a's row, above `candidate_threshold`.
    """
    n = len(canon)
    windows = crop_windows(settings.max_crop, COARSE_STEPS)
    thumbs = np.concatenate([window_thumbnails(canon[i:i + 1024], windows, COARSE_CELLS, 0.5, 2.0)
                             for i in range(0, n, 1024)])
    whole = np.ascontiguousarray(thumbs[:, 0])
    by_window = np.ascontiguousarray(thumbs.transpose(1, 2, 0))  # (K, cells, n)
    del thumbs
    keep = min(SHORTLIST, n - 1)

    def search(start: int) -> np.ndarray:
        block = whole[start:start + ROW_BLOCK]
        rows = len(block)
        scores = np.empty((rows, n), np.float32)
        out = np.empty((rows, COLUMN_BLOCK), np.float32)
        for column in range(0, n, COLUMN_BLOCK):
            stop = min(n, column + COLUMN_BLOCK)
            tile, part = scores[:, column:stop], out[:, :stop - column]
            np.matmul(block, by_window[0][:, column:stop], out=tile)
            for k in range(1, len(by_window)):
                np.matmul(block, by_window[k][:, column:stop], out=part)
                np.maximum(tile, part, out=tile)
        scores[np.arange(rows), start + np.arange(rows)] = -np.inf  # not oneself
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        hit = np.take_along_axis(scores, top, axis=1) >= settings.candidate_threshold
        first = np.broadcast_to((start + np.arange(rows))[:, None], top.shape)[hit]
        return np.stack([first, top[hit]], axis=1)

    found = list(parallel_map(search, range(0, n, ROW_BLOCK), settings.threads, progress, "shortlist"))
    pairs = np.sort(np.concatenate(found), axis=1) if found else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0)


def best_windows(canon: np.ndarray, pairs: np.ndarray, settings: DuplicateSettings,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each pair (a, b): which is the query (the possible crop), which the reference, the reference's
    grid window (left, right, top, bottom) that best matches the whole query at 16 x 16, and that score.

    The 225 window thumbnails of an image are made once (in chunks, to bound memory) and compared with all
    of that image's partners in one matrix product.
    """
    windows = crop_windows(settings.max_crop, WINDOW_STEPS)
    side = len(windows)
    low = np.array([w[0] for w in windows])
    high = np.array([w[1] for w in windows])
    whole = np.concatenate([window_thumbnails(canon[i:i + 1024], [(0.0, 1.0)], WINDOW_CELLS, 0.5, 3.0)[:, 0]
                            for i in range(0, len(canon), 1024)])
    # Directed pairs: the first half has a as the query, the second half b.
    queries = np.concatenate([pairs[:, 0], pairs[:, 1]])
    refs = np.concatenate([pairs[:, 1], pairs[:, 0]])
    best_score = np.full(len(queries), -1.0, np.float32)
    best_index = np.zeros(len(queries), np.int64)
    order = np.argsort(refs, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(refs[order])) + 1) if len(order) else []

    def rerank(start: int) -> None:
        block = groups[start:start + 64]
        grids = window_thumbnails(canon[[refs[g[0]] for g in block]], windows, WINDOW_CELLS, 0.5, 3.0)
        for grid, members in zip(grids, block):
            scores = grid @ whole[queries[members]].T  # (K, partners)
            best_index[members] = scores.argmax(axis=0)
            best_score[members] = scores.max(axis=0)

    for _ in parallel_map(rerank, range(0, len(groups), 64), settings.threads, progress, "re-rank"):
        pass
    half = len(pairs)
    swap = best_score[half:] > best_score[:half]
    chosen = np.where(swap, best_index[half:], best_index[:half])
    y, x = np.divmod(chosen, side)
    window = np.stack([low[x], high[x], low[y], high[y]], axis=1)
    query = np.where(swap, pairs[:, 1], pairs[:, 0])
    ref = np.where(swap, pairs[:, 0], pairs[:, 1])
    return query, ref, window, np.maximum(best_score[:half], best_score[half:])


def select_candidates(pairs: np.ndarray, score16: np.ndarray, settings: DuplicateSettings) -> np.ndarray:
    """Indices of the pairs to align: above `window_threshold` and among `max_candidates` best of either image."""
    ok = np.flatnonzero(score16 >= settings.window_threshold)
    if not len(ok):
        return ok
    ends = np.concatenate([pairs[ok, 0], pairs[ok, 1]])
    scores = np.concatenate([score16[ok], score16[ok]])
    order = np.lexsort((-scores, ends))
    sorted_ends = ends[order]
    first = np.searchsorted(sorted_ends, sorted_ends, side="left")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - first
    near = (rank[:len(ok)] < settings.max_candidates) | (rank[len(ok):] < settings.max_candidates)
    return ok[near]


def align_and_score(canon: np.ndarray, query: np.ndarray, ref: np.ndarray, window: np.ndarray,
                    settings: DuplicateSettings, progress: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final scores of each (query, reference, grid window) (steps 4-7): the aperiodic correlation, the
    fine-band coherence and the tile agreement; -1 for pairs dropped at 32 x 32."""
    scores = np.full(len(query), -1.0, np.float32)
    fine = np.full(len(query), -1.0, np.float32)
    tiles = np.full(len(query), -1.0, np.float32)

    def align(start: int) -> None:
        rows = slice(start, start + PAIR_BATCH)
        q = canon[query[rows]].astype(np.float32)
        r = canon[ref[rows]].astype(np.float32)
        grid = window[rows]
        # Two starting points: the best grid window, and no crop at all (on a periodic pattern a window a
        # period off can look as good as the true one at 16 x 16, and refinement then settles there).
        cropped = np.flatnonzero(np.abs(grid - np.array([0.0, 1.0, 0.0, 1.0])).max(axis=1) > 0)
        starts = np.concatenate([grid, np.tile([0.0, 1.0, 0.0, 1.0], (len(cropped), 1))])
        pick = np.concatenate([np.arange(len(q)), cropped])
        score, win = refine_coarse(q[pick], r[pick], starts)
        best = np.full(len(q), -np.inf)
        chosen = np.zeros((len(q), 4))
        for i in np.argsort(score, kind="stable"):  # ascending: the better start of a pair is written last
            best[pick[i]], chosen[pick[i]] = score[i], win[i]
        keep = np.flatnonzero(best >= FINE_GATE)
        if len(keep):
            found = refined_score(q[keep], r[keep], chosen[keep])
            scores[start + keep], fine[start + keep], tiles[start + keep] = found

    for _ in parallel_map(align, range(0, len(query), PAIR_BATCH), settings.threads, progress, "aligning"):
        pass
    return scores, fine, tiles


def refine_coarse(query: np.ndarray, ref: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refine at 32 pixels; return the band-passed correlation at 32 and the window."""
    window = refine_window(query, ref, window, size=32, blur=1.0, shading=4.0, steps=STEPS_32)
    q = standardise(bandpass(whole_images(query, 32), 1.0, 4.0))
    r = standardise(bandpass(sample_windows(ref, np.clip(window, 0.0, 1.0), 32), 1.0, 4.0))
    return (q * r).sum(axis=(1, 2)), window


def refined_score(query: np.ndarray, ref: np.ndarray, window: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine at 64 pixels, then the aperiodic correlation, the fine-band coherence and the tile agreement
    of the aligned pair."""
    window = refine_window(query, ref, window, size=CANON, blur=0.7, shading=8.0, steps=STEPS_64)
    q = whole_images(query, CANON)
    r = sample_windows(ref, np.clip(window, 0.0, 1.0), CANON)
    # Blur of 1.5 pixels: noise and JPEG blocks fade, defects and line edges stay (measured against 1 and 2).
    shape = aperiodic_correlation(standardise(bandpass(q, 1.5, 8.0)), standardise(bandpass(r, 1.5, 8.0)))
    return shape, fine_band_coherence(q, r), tile_agreement(q, r)


def fine_band_coherence(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Correlation of two aligned images in the ring of FINE_BAND cycles per pixel, Hann-windowed.

    On a faint picture the band-passed correlation is carried by shading and edge glow that every capture of
    one instrument shares, and added noise easily pulls a copy below the threshold. The finer ring holds the
    grain of the one capture: other captures decorrelate there (median 0.02), copies keep most of it.
    """
    ring, weight, taper = _fine_band(q.shape[-1])
    fq = np.fft.rfft2((q - q.mean(axis=(-2, -1), keepdims=True)) * taper)[:, ring]
    fr = np.fft.rfft2((r - r.mean(axis=(-2, -1), keepdims=True)) * taper)[:, ring]
    power_q, power_r = fq.real ** 2 + fq.imag ** 2, fr.real ** 2 + fr.imag ** 2
    # Lines and edges (a scratch, a grating) put strong bins in the ring that two captures of one kind of
    # scene share; grain is spread thin (benchmark, thresholds 0.75 / 0.7: 14 false pairs of 5,500 without
    # the strong bins, 36 with them).
    power = power_q + power_r
    weight = np.where(power > FINE_LINE_POWER * power.mean(axis=1, keepdims=True), 0.0, weight)
    cross = ((fq.real * fr.real + fq.imag * fr.imag) * weight).sum(axis=1)
    norm = np.sqrt((power_q * weight).sum(axis=1) * (power_r * weight).sum(axis=1))
    result: np.ndarray = (cross / np.maximum(norm, 1e-20)).astype(np.float32)
    return result


def tile_agreement(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Lower quartile, over TILES x TILES tiles, of the band-passed correlation of two aligned images: high
    only when the two agree all over the picture, not just where one feature sits."""
    n, size = len(q), q.shape[-1]
    side = size // TILES
    cut = slice(0, side * TILES)

    def tiled(images: np.ndarray) -> np.ndarray:
        detail = bandpass(images, 0.7, 4.0)[:, cut, cut]
        return standardise(detail.reshape(n, TILES, side, TILES, side).transpose(0, 1, 3, 2, 4))

    correlation = (tiled(q) * tiled(r)).sum(axis=(-2, -1)).reshape(n, TILES * TILES)
    result: np.ndarray = np.percentile(correlation, TILE_QUANTILE, axis=1).astype(np.float32)
    return result


@lru_cache(maxsize=4)
def _fine_band(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rfft2 bins of the FINE_BAND ring (with their weight: the mirrored half counts twice) and the taper."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx ** 2 + fy ** 2)
    ring = (radius >= FINE_BAND[0]) & (radius < FINE_BAND[1])
    mirrored = np.where((fx > 0) & (fx < 0.5), 2.0, 1.0) * np.ones_like(fy)
    hann = np.hanning(size).astype(np.float32)
    return ring, mirrored[ring].astype(np.float32), np.outer(hann, hann)


def whole_images(images: np.ndarray, size: int) -> np.ndarray:
    """Each image, area-resampled to size x size: one shared matrix, so two large products."""
    if size == images.shape[-1]:
        return images
    resample = area_matrices(np.zeros(1), np.ones(1), size, images.shape[-1])[0]
    result: np.ndarray = resample @ images @ resample.T
    return result


def refine_window(query: np.ndarray, ref: np.ndarray, window: np.ndarray, size: int, blur: float,
                  shading: float, steps: int) -> np.ndarray:
    """Gauss-Newton steps on the window (left, right, top, bottom) of `ref` so that it matches `query`.

    Model: query ~ gain * ref[window] + offset. Moving an edge of the window shifts the sampled image along
    x (left, right) or y (top, bottom) with a weight that falls off across the window, so one linear solve
    of six unknowns per pair and step gives the update.
    """
    m = len(query)
    window = window.astype(np.float64).copy()
    if not steps or not m:
        return window
    inner = slice(2, size - 2)  # the border: where blur and window edges disagree most
    target = bandpass(whole_images(query, size), blur, shading)[:, inner, inner].reshape(m, -1, 1)
    u = ((np.arange(size) + 0.5) / size).astype(np.float32)[inner]
    basis = np.empty((m, size - 4, size - 4, 6), np.float32)
    basis[..., 1] = 1.0
    for _ in range(steps):
        image = bandpass(sample_windows(ref, window, size), blur, shading)
        grad_y, grad_x = np.gradient(image, axis=(1, 2))
        per_x = (size / np.maximum(window[:, 1] - window[:, 0], 1e-3)).astype(np.float32)[:, None, None]
        per_y = (size / np.maximum(window[:, 3] - window[:, 2], 1e-3)).astype(np.float32)[:, None, None]
        d_x = grad_x[:, inner, inner] * per_x
        d_y = grad_y[:, inner, inner] * per_y
        basis[..., 0] = image[:, inner, inner]
        np.multiply(d_x, 1 - u, out=basis[..., 2])
        np.multiply(d_x, u, out=basis[..., 3])
        np.multiply(d_y, (1 - u)[:, None], out=basis[..., 4])
        np.multiply(d_y, u[:, None], out=basis[..., 5])
        flat = basis.reshape(m, -1, 6)
        normal = np.matmul(flat.transpose(0, 2, 1), flat).astype(np.float64) + 1e-6 * np.eye(6)
        rhs = np.matmul(flat.transpose(0, 2, 1), target).astype(np.float64)
        solution = np.linalg.solve(normal, rhs)[:, :, 0]
        gain = solution[:, 0]
        step = solution[:, 2:] / np.where(np.abs(gain) > 1e-6, gain, 1e-6)[:, None]
        step = np.clip(step, -0.03, 0.03)
        step[gain <= 0] = 0.0  # an inverted match is no match: leave the window where it was
        window += step
        window[:, [0, 2]] = np.clip(window[:, [0, 2]], -0.02, 0.45)
        window[:, [1, 3]] = np.clip(window[:, [1, 3]], 0.55, 1.02)
    return window


def aperiodic_correlation(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Correlation of what is left of two aligned images once their shared periodic pattern is taken out.

    Two different gratings (or contact-hole arrays) of one pitch correlate at 0.97 once aligned: the
    lattice is almost all of their energy. Their defects, line-edge roughness and grain are what differ,
    so the spectral lines (bins with over PERIODIC_POWER times the mean power of the pair) are zeroed in
    both before correlating. An image without a strong lattice keeps nearly all of its energy.
    """
    fq, fr = np.fft.rfft2(q), np.fft.rfft2(r)
    power = np.abs(fq) ** 2 + np.abs(fr) ** 2
    lines = power > PERIODIC_POWER * power.mean(axis=(1, 2), keepdims=True)
    size = q.shape[-2:]
    rest_q = standardise(np.fft.irfft2(np.where(lines, 0, fq), s=size).astype(np.float32))
    rest_r = standardise(np.fft.irfft2(np.where(lines, 0, fr), s=size).astype(np.float32))
    result: np.ndarray = (rest_q * rest_r).sum(axis=(1, 2))
    return result


def parallel_map(function: Callable[[T], R], items: Sequence[T], threads: int, progress: bool,
                 desc: str) -> Iterator[R]:
    """`map` over a thread pool, in order, with a progress bar: numpy releases the GIL in its kernels."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="batch", leave=False, disable=None)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(function, items):
            if bar is not None:
                bar.update(1)
            yield result
    if bar is not None:
        bar.close()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Keep BLAS to one thread while our own threads run: the search does many small matrix products, and
    two BLAS threads per product on two busy cores wait on each other (measured 13x slower)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
