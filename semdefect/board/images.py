"""THE preprocessing path: any image file -> the model's input array (board side: numpy + Pillow only).

Training, evaluation, calibration and inference all call `load_image`, so no stage can drift from another.
What it does, in order, is what the model's metadata declares (`Preprocess.to_json`):

1. decode the first frame, undo EXIF rotation;
2. convert to one grey channel in [0, 1]: 8-bit and palette images / 255, 16-bit / 65535, RGB by ITU-R 601
   luma, an alpha channel composited on white, 32-bit float scaled from its own min..max unless it is in [0, 1];
3. cut `crop_bottom` rows (an instrument data bar), if asked;
4. resize to `image_size` x `image_size` with Pillow's filter on the float image (antialiased when shrinking);
5. optional per-image normalisation (`minmax`: the 1st..99th percentile stretched to 0..1, which takes away the
   detector's gain and offset).

The 1/255 scaling of the reference model is step 2, outside the graph: one less operator for INT8 to get wrong.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
NORMALIZE_METHODS = ("none", "minmax")
EXIF_FORMATS = ("JPEG", "MPO", "TIFF", "WEBP")  # formats whose files carry EXIF in their header
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how the camera was held

# Pillow's own bomb check must not warn first: we refuse by our own limit, with the file named.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn a file into the model's input; stored in the model's metadata."""

    image_size: int = 128
    resize: str = "bilinear"
    crop_bottom: int = 0
    normalize: str = "none"
    max_image_pixels: int = 100_000_000

    def to_json(self) -> str:
        """The JSON written into a model file as `preprocess`."""
        spec = asdict(self)
        spec.update(color="gray", scaling="full range of the bit depth -> [0,1] (8-bit: 1/255)",
                    layout="NHWC", dtype="float32")
        return json.dumps(spec, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        try:
            spec = json.loads(text)
            prep = cls(int(spec["image_size"]), str(spec["resize"]), int(spec["crop_bottom"]),
                       str(spec["normalize"]), int(spec.get("max_image_pixels", cls.max_image_pixels)))
            # models of earlier versions may declare a blank-field limit; only "none" (0) is still implemented
            unsupported = float(spec.get("min_range", 0.0)) != 0.0
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable preprocess metadata: {exc}") from None
        if prep.resize not in RESIZE_FILTERS or prep.normalize not in NORMALIZE_METHODS or unsupported:
            raise ValueError(f"unsupported preprocess metadata: resize={prep.resize}, normalize={prep.normalize}"
                             + (f", min_range={spec['min_range']}" if unsupported else ""))
        return prep


def load_image(path: Path, prep: Preprocess) -> np.ndarray:
    """Read one image file and return the model input, float32 of shape (size, size, 1).

    Raises ImageError, naming the file, for anything that cannot be read.
    """
    gray = read_gray(path, prep.max_image_pixels)
    return preprocess_gray(gray, prep, name=str(path))


def preprocess_gray(gray: np.ndarray, prep: Preprocess, name: str = "image") -> np.ndarray:
    """Steps 3-5 on a grey float image in [0, 1]."""
    if prep.crop_bottom:
        if gray.shape[0] <= prep.crop_bottom:
            raise ImageError(f"{name}: image is {gray.shape[0]} rows high, "
                             f"cannot cut a {prep.crop_bottom}-row data bar")
        gray = gray[: gray.shape[0] - prep.crop_bottom]
    size = prep.image_size
    if gray.shape != (size, size):
        resized = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32)).resize(
            (size, size), RESIZE_FILTERS[prep.resize])
        gray = np.asarray(resized, dtype=np.float32)
    gray = normalize(gray, prep.normalize)
    result: np.ndarray = np.clip(gray, 0.0, 1.0).astype(np.float32)[:, :, None]
    return result


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """np.percentile's default (linear) percentiles from one partial sort: the same values, in half the time
    (this runs for every image on the board)."""
    flat = values.ravel()
    position = np.asarray(qs, dtype=np.float64) / 100 * (flat.size - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, flat.size - 1)
    ordered = np.partition(flat, np.unique(np.concatenate([below, above])))
    low, high, t = ordered[below], ordered[above], position - below
    # numpy's own interpolation, from the nearer neighbour, so the values are bit-identical to np.percentile
    return np.where(t >= 0.5, high - (high - low) * (1 - t), low + (high - low) * t)


def normalize(gray: np.ndarray, method: str) -> np.ndarray:
    """Per-image intensity normalisation, to take away differences of detector gain and offset."""
    if method == "minmax":
        low, high = percentiles(gray, (1.0, 99.0))
        return (gray - low) / (high - low) if high - low > 1e-6 else np.zeros_like(gray)
    return gray


def read_gray(path: Path, max_pixels: int = 100_000_000) -> np.ndarray:
    """Decode any supported image file into a 2-D float32 grey image in [0, 1]."""
    image: Image.Image  # Image.open gives an ImageFile; exif_transpose may give a plain Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings (EXIF, ICC) are noise for one grey channel
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"{path}: {width}x{height} pixels is over the limit of {max_pixels} "
                                     "(data.max_image_pixels); refusing a possible decompression bomb")
                if width < 1 or height < 1:
                    raise ImageError(f"{path}: image has no pixels ({width}x{height})")
                image.seek(0)
                image.load()
                # turn as the camera was held; most files have no EXIF at all, and parsing it costs what
                # decoding a small PNG does, so it is read only where there is some
                if (image.format in EXIF_FORMATS or "exif" in image.info) and \
                        image.getexif().get(EXIF_ORIENTATION, 1) != 1:
                    image = ImageOps.exif_transpose(image)
                return to_gray_float(image)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        if empty_file(path):  # asked only here: a stat per good file costs more than it tells
            raise ImageError(f"{path}: empty file (0 bytes)") from None
        raise ImageError(f"{path}: not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, TypeError, IndexError, KeyError,
            ZeroDivisionError, Image.DecompressionBombError) as exc:
        # Pillow's decoders report truncated or corrupt data with any of these.
        raise ImageError(f"{path}: cannot decode image: {exc}") from None


def empty_file(path: Path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def to_gray_float(image: Image.Image) -> np.ndarray:
    """One grey channel in [0, 1] from any Pillow mode."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        top = 255.0 if pixels.max(initial=0) <= 255 else 65535.0 if pixels.max(initial=0) <= 65535 else None
        return (pixels / top).astype(np.float32) if top else stretch(pixels)
    if mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        in_unit_range = pixels.min(initial=0) >= 0.0 and pixels.max(initial=0) <= 1.0
        return pixels.astype(np.float32) if in_unit_range else stretch(pixels)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    grey = image if image.mode == "L" else image.convert("L")  # convert() copies even an "L" image
    return np.asarray(grey, dtype=np.float32) / 255.0


def stretch(pixels: np.ndarray) -> np.ndarray:
    """Min..max to 0..1, for data with no fixed range (float and 32-bit integer images)."""
    low, high = float(pixels.min()), float(pixels.max())
    if high - low <= 0:
        return np.zeros(pixels.shape, dtype=np.float32)
    return ((pixels - low) / (high - low)).astype(np.float32)
