"""Read the tensors of a legacy PyTorch file (`torch.save` before 1.6) with `pickle` and numpy alone, no torch.

Such a file is five pickles and the raw bytes one after the other: a magic number, the protocol version, the
system's sizes, the object itself (a state dict whose tensors point at storages by persistent id), and the list of
storage keys; then, for each key in that order, the element count (8 bytes, little-endian) and the elements. The
pretrained backbone's weights ship in this format; reading them without torch keeps a several-GB dependency out
of the workstation install. Only what a state dict needs is unpickled: any other class is refused, so the file
cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from semdefect.board.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization's MAGIC_NUMBER
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Storage:
    """A storage named in the pickle; its elements are read after the pickles."""

    def __init__(self, dtype: type) -> None:
        self.dtype = dtype
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor as the pickle describes it: a view (offset, shape, strides in elements) of a storage."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None  # filled in by read_state_dict before any array is made
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.shape, [s * itemsize for s in self.strides])
        return np.array(view)  # a contiguous copy, so callers may transpose and reshape freely


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
                    *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(shape), tuple(strides))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key = pid[0], pid[1], pid[2]
        if kind != "storage" or storage_type not in STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unknown persistent id {pid[:2]}")
        return self.storages.setdefault(str(key), _Storage(STORAGE_DTYPES[storage_type]))


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the legacy PyTorch file at `path`, by name, as numpy arrays in PyTorch's layout."""
    try:
        with open(path, "rb") as file:
            if pickle.load(file) != LEGACY_MAGIC:
                raise ModelError(f"{path}: not a legacy PyTorch file (no magic number)")
            pickle.load(file)  # protocol version
            pickle.load(file)  # system info (all files here are little-endian)
            unpickler = _StateDictUnpickler(file)
            state = unpickler.load()
            for key in pickle.load(file):
                storage = unpickler.storages[str(key)]
                (count,) = struct.unpack("<q", file.read(8))
                raw = file.read(count * np.dtype(storage.dtype).itemsize)
                storage.data = np.frombuffer(raw, storage.dtype, count)
    except (OSError, pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot read the PyTorch weights: {exc}") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: value.array() for name, value in state.items() if isinstance(value, _TensorRef)}
