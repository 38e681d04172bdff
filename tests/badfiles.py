"""The bad-input matrix: files of every kind a fab produces, and what the tools must make of each."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def noise_image(width=64, height=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_with_lying_header(width=5000, height=5000) -> bytes:
    """A valid PNG signature and IHDR that promise far more pixels than the data holds."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 100))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    image = noise_image(80, 40)
    exif = image.getexif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif)


# name -> (file name, bytes factory, expected: "ok" or "error")
CASES: dict[str, tuple[str, callable, str]] = {
    "zero_byte": ("empty.png", lambda: b"", "error"),
    "truncated_png": ("cut.png", lambda: encoded(noise_image(200, 200), "PNG")[:3000], "error"),
    "truncated_jpeg": ("cut.jpg", lambda: encoded(noise_image(200, 200), "JPEG")[:1500], "error"),
    "text_named_png": ("notes.png", lambda: b"this is a text file\n" * 10, "error"),
    "lying_header": ("liar.png", png_with_lying_header, "error"),
    "decompression_bomb": ("bomb.png", lambda: encoded(Image.new("L", (12000, 10000)), "PNG"), "error"),
    "tiff_16bit": ("deep.tif", lambda: encoded(Image.fromarray(
        np.random.default_rng(1).integers(0, 65535, (64, 64), dtype=np.uint16)), "TIFF"), "ok"),
    "tiff_float32": ("float.tif", lambda: encoded(Image.fromarray(
        np.random.default_rng(2).normal(0, 5, (64, 64)).astype(np.float32)), "TIFF"), "ok"),
    "rgba": ("alpha.png", lambda: encoded(noise_image().convert("RGBA"), "PNG"), "ok"),
    "palette": ("palette.png", lambda: encoded(noise_image().convert("P"), "PNG"), "ok"),
    "cmyk_jpeg": ("cmyk.jpg", lambda: encoded(noise_image().convert("CMYK"), "JPEG"), "ok"),
    "exif_rotated_jpeg": ("rotated.jpg", exif_rotated_jpeg, "ok"),
    "one_pixel": ("dot.png", lambda: encoded(Image.new("L", (1, 1), 90), "PNG"), "ok"),
    "long_strip": ("strip.png", lambda: encoded(noise_image(10000, 10), "PNG"), "ok"),
    "spaces_and_unicode_name": ("wafer scan µ-Ø 7.png", lambda: encoded(noise_image(), "PNG"), "ok"),
}

BOMB_LIMIT = "data.max_image_pixels=100000000"  # the default; the bomb above is 120 M pixels


def write_case(folder: Path, name: str) -> Path:
    file_name, factory, _ = CASES[name]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_bytes(factory())
    return path


def can_make_unreadable(path: Path) -> bool:
    """Root reads files whatever their permission bits: the permission case is only testable as a user."""
    os.chmod(path, 0)
    readable = os.access(path, os.R_OK)
    if readable:
        os.chmod(path, 0o644)
    return not readable
