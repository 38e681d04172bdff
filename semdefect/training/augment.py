"""Train-only augmentation, in numpy on a batch: what a label survives (workstation side).

A top-down SEM image has no preferred orientation, its field of view differs from tool to tool and recipe to
recipe, detector gain and offset vary, and shot noise varies with beam current. Evaluation and the board never
augment: they see what `board.images.load_image` gives.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

NOISE_STD = 0.02  # largest standard deviation of the added noise, in [0,1] pixel units


def augment_batch(x: np.ndarray, rng: np.random.Generator, zoom: float = 1.0,
                  noise_std: float = NOISE_STD, randconv: float = 0.0) -> np.ndarray:
    """Random zoom, flips, 90-degree rotations, brightness/contrast and noise, and with probability `randconv`
    a random filter (`random_convolution`); returns a new array.

    A top-down SEM image has no preferred orientation, its field of view differs from tool to tool and
    recipe to recipe, detector gain and offset vary, and shot noise varies with beam current: the label
    survives all of these.
    """
    n = len(x)
    x = zoom_batch(x, rng, zoom) if zoom > 1.0 else x.copy()
    for i in np.flatnonzero(rng.random(n) < randconv):
        x[i, :, :, 0] = random_convolution(x[i, :, :, 0], rng)
    flip = rng.random(n) < 0.5
    x[flip] = x[flip][:, :, ::-1]
    turns = rng.integers(0, 4, n)
    for k in (1, 2, 3):
        x[turns == k] = np.rot90(x[turns == k], k, axes=(1, 2))
    contrast = rng.uniform(0.8, 1.25, (n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-0.1, 0.1, (n, 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean + brightness
    if noise_std > 0:
        sigma = (noise_std * rng.random((n, 1, 1, 1))).astype(np.float32)
        x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
    clipped: np.ndarray = np.clip(x, 0.0, 1.0)
    return clipped


def zoom_batch(x: np.ndarray, rng: np.random.Generator, zoom: float) -> np.ndarray:
    """Each image magnified by a random factor in [1, zoom]: a random square crop resized back (bilinear)."""
    size = x.shape[1]
    out = np.empty_like(x)
    sides = size / rng.uniform(1.0, zoom, len(x))
    corners = rng.random((len(x), 2)) * (size - sides)[:, None]
    for i, (side, (top, left)) in enumerate(zip(sides, corners)):
        image = Image.fromarray(x[i, :, :, 0])  # float32 -> mode "F"
        box = (float(left), float(top), float(left + side), float(top + side))
        out[i, :, :, 0] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    return out


RANDCONV_KERNELS = (1, 3, 5, 7)


def random_convolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RandConv (Xu et al., ICLR 2021): the image through a random k x k filter (k in 1, 3, 5, 7; Gaussian weights),
    blended with the original by a random share, stretched back to [0, 1] as `minmax` preprocessing would.

    Sources differ in texture, sharpness and contrast polarity more than in shapes; a random filter changes the
    first three and keeps the shapes, so the model learns the shapes (a domain-generalisation method)."""
    k = int(rng.choice(RANDCONV_KERNELS))
    kernel = rng.standard_normal((k, k)).astype(np.float32) / k
    padded = np.pad(image, k // 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k))
    filtered = np.einsum("ijkl,kl->ij", windows, kernel)
    low, high = np.percentile(filtered, (1.0, 99.0))
    filtered = np.clip((filtered - low) / (high - low), 0.0, 1.0) if high - low > 1e-6 else image
    share = np.float32(rng.random())
    mixed: np.ndarray = (share * filtered + (1 - share) * image).astype(np.float32)
    return mixed
