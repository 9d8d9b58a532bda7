"""Hostile photo files for the hardening tests: small files whose headers lie, made on the fly.

Each maker writes a few KB to a few MB; none of them may ever be decoded in full.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(path: Path, width: int, height: int, depth: int = 16, data_mb: int = 2) -> Path:
    """A PNG declaring ``width x height`` RGB at ``depth`` bits, with ``data_mb`` MB of zero image data."""
    row = b"\x00" + b"\x00" * (width * 3 * depth // 8)
    compressor = zlib.compressobj(1)
    rows_needed = max(1, data_mb * 1_000_000 * 300 // len(row))  # zeros compress ~300:1 at level 1
    data = b"".join(compressor.compress(row) for _ in range(min(rows_needed, height))) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    blob = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    path.write_bytes(blob)
    return path


def _patch_tiff_size(data: bytearray, width: int, height: int) -> bytearray:
    """Set ImageWidth/ImageLength in the first IFD of a little-endian classic TIFF."""
    (first,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, first)
    for i in range(count):
        entry = first + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        value = {256: width, 257: height}.get(tag)
        if value is not None:
            if kind == 3:
                struct.pack_into("<HHIH", data, entry, tag, 4 if value > 65535 else 3, 1, value)
                if value > 65535:
                    struct.pack_into("<I", data, entry + 8, value)
            else:
                struct.pack_into("<I", data, entry + 8, value)
    return data


def huge_tiff(path: Path, width: int, height: int, tiled: bool = True, compression: str | None = "zlib") -> Path:
    """A small 16-bit RGB TIFF (tiled or striped) whose first page then declares ``width x height``."""
    buffer = io.BytesIO()
    pixels = np.zeros((64, 64, 3), np.uint16)
    options = {"tile": (32, 32)} if tiled else {"rowsperstrip": 16}
    tifffile.imwrite(buffer, pixels, photometric="rgb", compression=compression, metadata=None, **options)
    path.write_bytes(bytes(_patch_tiff_size(bytearray(buffer.getvalue()), width, height)))
    return path


def multipage_tiff(path: Path, pages: list[tuple[int, int]]) -> Path:
    """A TIFF with one 8-bit RGB page per (width, height); then the first page's size is made huge."""
    with tifffile.TiffWriter(path) as tif:
        for width, height in pages:
            tif.write(np.zeros((height, width, 3), np.uint8), photometric="rgb", metadata=None)
    return path


def jpeg_bytes(width: int = 24, height: int = 16) -> bytes:
    """A real baseline JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose frame header (SOF0) declares ``width x height``."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def jpeg_with_second_frame(path: Path, width: int, height: int) -> Path:
    """A JPEG whose real 24 x 16 frame header is followed by a second one declaring ``width x height``
    (the first passes a limit, a decoder that takes the last would allocate for the second)."""
    data = jpeg_bytes()
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    segment = bytearray(data[sof : sof + 2 + length])
    struct.pack_into(">HH", segment, 5, height, width)
    path.write_bytes(data[: sof + 2 + length] + bytes(segment) + data[sof + 2 + length :])
    return path


def webp_declaring(path: Path, width: int, height: int) -> Path:
    """A small lossy WebP whose VP8 frame header declares ``width x height`` (14 bits each at most)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 24, 3), 120, np.uint8)).save(buffer, "WEBP", quality=80)
    data = bytearray(buffer.getvalue())
    start = data.index(b"\x9d\x01\x2a")
    struct.pack_into("<HH", data, start + 3, width, height)
    path.write_bytes(bytes(data))
    return path
