"""A photo's size from its header, read before anything is decoded, and files that must never be opened.

Decoders allocate what a header declares: a file of a few MB can declare 500 MP and ask for gigabytes.
:func:`probe` reads only the header (a few KB at most) of JPEG, PNG, TIFF (classic and BigTIFF, first
page) and WebP files and returns the declared size, so a limit is checked before any decoder runs.
:func:`open_regular` refuses FIFOs, sockets and devices before opening them (through
:func:`autohdr_cli.inputfile.open_if_regular`, which checkpoints and `.cube` files use too): opening a FIFO for
reading waits for a writer forever.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from .inputfile import SpecialFile, open_if_regular

#: Default for ``--max-megapixels``: real-estate panoramas pass 100 MP; 400 MP of 16-bit RGB is 2.4 GB.
DEFAULT_MAX_MEGAPIXELS = 400.0

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SEGMENTS = 4096  # a JPEG header with more segments before its frame is damaged or hostile
_MAX_IFD_ENTRIES = 4096


class HeaderError(Exception):
    """A header is damaged, hostile, or declares more pixels than allowed; the message says why."""


@dataclass(frozen=True)
class Header:
    """What a photo's header declares: format, width and height of the image that will be decoded."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """Declared pixel count."""
        return self.width * self.height


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a photo file for reading if it is a regular file (:func:`inputfile.open_if_regular`); anything
    else raises :class:`HeaderError` without being opened, a missing file its ``OSError``."""
    try:
        return open_if_regular(path)
    except SpecialFile as e:
        raise HeaderError(f"is a {e.kind}, not a photo file: skipped, never opened") from None


def check_pixels(header: Header, max_megapixels: float) -> None:
    """Raise :class:`HeaderError` when the declared size is over ``max_megapixels``."""
    if header.width <= 0 or header.height <= 0:
        raise HeaderError(f"{header.format} header declares an empty image ({header.width} x {header.height})")
    if header.pixels > max_megapixels * 1e6:
        raise HeaderError(
            f"too many pixels: {header.width} x {header.height} = {header.pixels / 1e6:.1f} MP, "
            f"over the --max-megapixels limit of {max_megapixels:g}"
        )


def probe(f: BinaryIO, kind: str) -> Header:
    """Read the declared size from an open file's header (``kind`` as sniffed: jpeg, png, tiff, webp)."""
    f.seek(0)
    try:
        if kind == "png":
            return _probe_png(f)
        if kind == "jpeg":
            return _probe_jpeg(f)
        if kind == "tiff":
            return _probe_tiff(f)
        if kind == "webp":
            return _probe_webp(f)
    except struct.error:
        raise HeaderError(f"truncated {kind} header") from None
    raise HeaderError(f"unknown format {kind}")


def _read(f: BinaryIO, count: int) -> bytes:
    data = f.read(count)
    if len(data) < count:
        raise HeaderError("truncated header")
    return data


def _probe_png(f: BinaryIO) -> Header:
    head = _read(f, 33)
    if head[12:16] != b"IHDR":
        raise HeaderError("PNG without IHDR first")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if depth not in (1, 2, 4, 8, 16) or colour not in (0, 2, 3, 4, 6):
        raise HeaderError(f"PNG header with bit depth {depth} and colour type {colour}")
    return Header("png", width, height)


def _probe_jpeg(f: BinaryIO) -> Header:
    _read(f, 2)
    for _ in range(_MAX_SEGMENTS):
        byte = _read(f, 1)
        while byte != b"\xff":  # junk between segments: libjpeg skips it too
            byte = _read(f, 1)
        marker = _read(f, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(f, 1)[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker in (0xD9, 0xDA):
            raise HeaderError("JPEG without a frame header before its image data")
        (length,) = struct.unpack(">H", _read(f, 2))
        if length < 2:
            raise HeaderError("JPEG segment with a bad length")
        if marker in _JPEG_SOF:
            _precision, height, width = struct.unpack(">BHH", _read(f, 5))
            if height == 0:
                raise HeaderError("JPEG whose height is given after the image data (DNL): not supported")
            return Header("jpeg", width, height)
        f.seek(length - 2, os.SEEK_CUR)
    raise HeaderError("JPEG with too many segments before its frame header")


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8: the ones sizes use


def _probe_tiff(f: BinaryIO) -> Header:
    head = _read(f, 16)
    order = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack(order + "H", head[2:4])
    big = version == 43
    if big:
        (first,) = struct.unpack(order + "Q", head[8:16])
    else:
        (first,) = struct.unpack(order + "I", head[4:8])
    f.seek(first)
    count_format, entry_size = (order + "Q", 20) if big else (order + "H", 12)
    (count,) = struct.unpack(count_format, _read(f, struct.calcsize(count_format)))
    if not 0 < count <= _MAX_IFD_ENTRIES:
        raise HeaderError(f"TIFF directory with {count} entries")
    values: dict[int, int] = {}
    entries = _read(f, count * entry_size)
    for i in range(count):
        entry = entries[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag not in (256, 257, 322, 323, 32997) or kind not in _TIFF_TYPES:
            continue
        code, size = _TIFF_TYPES[kind]
        value_offset = 12 if big else 8
        (values[tag],) = struct.unpack(order + code, entry[value_offset : value_offset + size])
    if 256 not in values or 257 not in values:
        raise HeaderError("TIFF without ImageWidth/ImageLength")
    header = Header("tiff", values[256], values[257])
    if values.get(32997, 1) > 1:
        raise HeaderError(f"TIFF volume of depth {values[32997]}: not a photo")
    tile = values.get(322, 0) * values.get(323, 0)
    if tile > max(header.pixels, 1) * 4 + 65536:  # a tile far larger than its image: a bomb, not a photo
        raise HeaderError(f"TIFF tiles of {values[322]} x {values[323]} for a {header.width} x {header.height} image")
    return header


def _probe_webp(f: BinaryIO) -> Header:
    head = _read(f, 30)
    chunk = head[12:16]
    data = head[20:30]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[4:7], "little")
        height = 1 + int.from_bytes(data[7:10], "little")
    elif chunk == b"VP8L":
        if data[0] != 0x2F:
            raise HeaderError("WebP lossless chunk without its signature")
        bits = int.from_bytes(data[1:5], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        if data[3:6] != b"\x9d\x01\x2a":
            raise HeaderError("WebP lossy chunk without its start code")
        width = int.from_bytes(data[6:8], "little") & 0x3FFF
        height = int.from_bytes(data[8:10], "little") & 0x3FFF
    else:
        raise HeaderError(f"WebP with an unknown first chunk {chunk!r}")
    return Header("webp", width, height)
