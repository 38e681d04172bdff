"""Read the metadata entries of a .tflite file with the standard library only (the board has no flatbuffers package).

A .tflite file is a FlatBuffer (tensorflow/compiler/mlir/lite/schema/schema.fbs): little-endian, a u32 offset to the
root table `Model` at byte 0, the identifier `TFL3` at bytes 4-8. `Model.metadata` is a list of (name, index into
`Model.buffers`); a buffer holds its bytes inline (`data`) or, in files over 2 GB, at a file `offset`. A table
starts with an i32 back-offset to its vtable, whose u16 slots (at 4 + 2 * field id) give each field's position in
the table, 0 for a field that is absent.
"""

from __future__ import annotations

import struct

# field ids of the schema (slot = 4 + 2 * id)
MODEL_BUFFERS, MODEL_METADATA = 4, 6
METADATA_NAME, METADATA_BUFFER = 0, 1
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2


class TfliteFormatError(ValueError):
    """The bytes are not a TFLite file, or one cut short."""


def _u32(data: bytes, position: int) -> int:
    value: int = struct.unpack_from("<I", data, position)[0]
    return value


def _field(data: bytes, table: int, field_id: int) -> int | None:
    """Where a table's field is stored, or None when the field is absent (its default)."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    slot = 4 + 2 * field_id
    if slot >= struct.unpack_from("<H", data, vtable)[0]:
        return None
    relative: int = struct.unpack_from("<H", data, vtable + slot)[0]
    return table + relative if relative else None


def _follow(data: bytes, position: int) -> int:
    """The position an offset stored at `position` points to (offsets are relative to where they are stored)."""
    return position + _u32(data, position)


def _vector(data: bytes, table: int, field_id: int) -> tuple[int, int]:
    """(length, position of the first element) of a vector field; (0, 0) when absent."""
    position = _field(data, table, field_id)
    if position is None:
        return 0, 0
    start = _follow(data, position)
    return _u32(data, start), start + 4


def read_metadata(data: bytes) -> dict[str, bytes]:
    """Every metadata entry of a .tflite file: {name: bytes}."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteFormatError("not a TFLite file (no TFL3 identifier)")
    try:
        root = _u32(data, 0)
        _, buffers = _vector(data, root, MODEL_BUFFERS)
        count, entries = _vector(data, root, MODEL_METADATA)
        found = {}
        for i in range(count):
            entry = _follow(data, entries + 4 * i)
            name_at = _field(data, entry, METADATA_NAME)
            if name_at is None:
                continue
            name_start = _follow(data, name_at)
            name = data[name_start + 4:name_start + 4 + _u32(data, name_start)].decode("utf-8")
            index_at = _field(data, entry, METADATA_BUFFER)
            buffer = _follow(data, buffers + 4 * (_u32(data, index_at) if index_at is not None else 0))
            size, start = _vector(data, buffer, BUFFER_DATA)
            if size == 0:  # large files keep buffers after the FlatBuffer, at a file offset
                offset_at, size_at = _field(data, buffer, BUFFER_OFFSET), _field(data, buffer, BUFFER_SIZE)
                offset = struct.unpack_from("<Q", data, offset_at)[0] if offset_at is not None else 0
                if offset > 1 and size_at is not None:
                    start, size = offset, struct.unpack_from("<Q", data, size_at)[0]
            if start + size > len(data):
                raise TfliteFormatError("metadata runs past the end of the file")
            found[name] = bytes(data[start:start + size])
    except (struct.error, UnicodeDecodeError) as exc:
        raise TfliteFormatError(f"damaged TFLite file ({exc})") from None
    return found
