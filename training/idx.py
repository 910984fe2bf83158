"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST (raw or gzipped).

IDX: a big-endian header -- two zero bytes, a type code, the number of dimensions, then one
uint32 size per dimension -- followed by the values, row-major. MNIST images use magic 2051
(uint8, 3 dimensions), labels magic 2049 (uint8, 1 dimension).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from axon.errors import AxonError

IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049
_GZIP_SIGNATURE = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(AxonError, ValueError):
    """An IDX file is unreadable, truncated or not what the caller expected."""


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file; gzip is detected by its signature."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IdxFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip data: {exc}") from exc


def parse_idx(data: bytes, source: str) -> npt.NDArray[np.generic]:
    """Parse IDX bytes into an array; ``source`` names the file in error messages."""
    if len(data) < 4:
        raise IdxFormatError(f"{source}: {len(data)} bytes is too short for an IDX header")
    zeros, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zeros != 0 or type_code not in _DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{source}: bad magic number 0x{int.from_bytes(data[:4], 'big'):08x}; "
            "not an IDX file (expected 0x0000, a type code and a dimension count)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(f"{source}: truncated header: {ndim} dimensions need "
                             f"{header_size} bytes, file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise IdxFormatError(f"{source}: truncated data: header promises shape {list(shape)} "
                             f"({expected} bytes), file has {found} bytes of data")
    if found > expected:
        raise IdxFormatError(f"{source}: {found - expected} unexpected trailing bytes after "
                             f"the data of shape {list(shape)}")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _expect_magic(magic: int, data: bytes, source: str, what: str) -> None:
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxFormatError(f"{source}: bad magic number {found} (0x{found:08x}); "
                             f"expected {magic} for {what}")


def read_idx_images(path: Path) -> npt.NDArray[np.uint8]:
    """Images file (magic 2051): uint8 array [N, rows, cols]."""
    data = read_idx_bytes(path)
    array = parse_idx(data, str(path))
    _expect_magic(IMAGES_MAGIC, data, str(path), "an images file (uint8, 3 dimensions)")
    if 0 in array.shape:
        raise IdxFormatError(f"{path}: images file has an empty dimension {list(array.shape)}")
    return np.asarray(array, dtype=np.uint8)


def read_idx_labels(path: Path) -> npt.NDArray[np.uint8]:
    """Labels file (magic 2049): uint8 array [N]."""
    data = read_idx_bytes(path)
    array = parse_idx(data, str(path))
    _expect_magic(LABELS_MAGIC, data, str(path), "a labels file (uint8, 1 dimension)")
    return np.asarray(array, dtype=np.uint8)


def encode_idx(array: npt.NDArray[np.generic]) -> bytes:
    """IDX bytes for ``array`` (the inverse of ``parse_idx``)."""
    codes = {dtype.str.lstrip("<>|="): code for code, dtype in _DTYPES.items()}
    key = array.dtype.str.lstrip("<>|=")
    if key not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot encode a {array.dtype} array of {array.ndim} dimensions as IDX")
    code = codes[key]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def write_idx(path: Path, array: npt.NDArray[np.generic]) -> None:
    """Write ``array`` as IDX; gzipped when ``path`` ends in ``.gz``."""
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)
