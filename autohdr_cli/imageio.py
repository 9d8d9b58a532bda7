"""Reading and writing photos: JPEG, PNG, TIFF and WebP, 8- and 16-bit, with their metadata.

A photo is decoded into a :class:`Photo`: the colour pixels as an ``H x W x 3`` array in the file's own
sample type (uint8, uint16 or float32), the alpha channel apart and untouched, the ICC profile and the
EXIF block (orientation already applied to the pixels and reset to 1 in the EXIF). Models work on
float32 in [0, 1]; :meth:`Photo.to_float` and :func:`quantize` convert both ways.

Writes are atomic: the file is written under a temporary name in the target folder and renamed into
place, so a crash or Ctrl-C never leaves a half-written photo behind.
"""

from __future__ import annotations

import io
import logging
import math
import os
import socket
import struct
import threading
import uuid
import weakref
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from .probe import DEFAULT_MAX_MEGAPIXELS, HeaderError, check_pixels, open_regular, probe

# The pixel limit is ours (``max_megapixels``, checked on the header before any decoder runs, see
# :mod:`autohdr_cli.probe`); Pillow's own bomb check would refuse what a user allowed, or only warn.
Image.MAX_IMAGE_PIXELS = None

#: File name extensions we read, mapped to the format name used everywhere else.
EXTENSIONS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
}
#: The extension written for each output format.
FORMAT_EXTENSION = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}
#: Marker in the names of temporary files, so listings can skip them.
TEMP_MARKER = ".autohdr-tmp-"

_ORIENTATION_TAG = 0x0112
_ICC_TIFF_TAG = 34675
_XMP_TIFF_TAG = 700
_IPTC_TIFF_TAG = 33723


class PhotoError(Exception):
    """A photo could not be read or written; the message says why in a few words."""


@dataclass
class Photo:
    """A decoded photo.

    ``pixels`` is ``H x W x 3`` in the file's sample type (uint8, uint16 or float32 in [0, 1]);
    ``alpha`` is ``H x W`` in the same type, or None; ``icc``, ``exif``, ``xmp`` (the XMP packet) and
    ``iptc`` (IPTC-IIM records) are raw bytes or None.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    source_format: str = ""
    xmp: bytes | None = None
    iptc: bytes | None = None

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.pixels.shape[1]

    @property
    def megapixels(self) -> float:
        """Pixel count in millions."""
        return self.height * self.width / 1e6

    @property
    def bit_depth(self) -> int:
        """8, 16 or 32 (float), from the sample type, never from the values."""
        return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(self.pixels.dtype, 32)

    def to_float(self) -> np.ndarray:
        """The colour pixels as float32 ``3 x H x W`` in [0, 1]."""
        return to_float(self.pixels).transpose(2, 0, 1)

    def with_pixels(self, pixels: np.ndarray) -> "Photo":
        """A copy of this photo's metadata and alpha with other colour pixels."""
        return replace(self, pixels=pixels)


def to_float(array: np.ndarray) -> np.ndarray:
    """Convert uint8/uint16/float samples to float32 in [0, 1] (scaled by the type's maximum)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1 / 255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) * np.float32(1 / 65535)
    return np.clip(array.astype(np.float32, copy=False), 0.0, 1.0)


def quantize(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round float values in [0, 1] to ``dtype`` (uint8, uint16; float32 is clipped only).

    Samples that already have the integer type ``dtype`` (rounded on a GPU) are returned as they are.
    """
    dtype = np.dtype(dtype)
    if array.dtype == dtype and dtype.kind == "u":
        return array
    if dtype == np.float32:
        return np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)
    top = 255.0 if dtype == np.uint8 else 65535.0
    out = np.clip(array, 0.0, 1.0) * np.float32(top)
    out += np.float32(0.5)
    return out.astype(dtype)


def format_of(path: str | os.PathLike) -> str | None:
    """The format name for a path's extension, or None when it is not a photo we read."""
    return EXTENSIONS.get(Path(path).suffix.lower())


# --------------------------------------------------------------------------------------------- reading


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def read_photo(
    path: str | os.PathLike,
    pool: BufferPool | None = None,
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    long_side: int | None = None,
) -> Photo:
    """Decode a photo file into a :class:`Photo`; raises :class:`PhotoError` with a short reason.

    Only regular files are opened (a FIFO, socket or device is refused unopened), and the size the
    header declares is checked against ``max_megapixels`` before any decoder runs; the decoded image
    must then have exactly that size. 8-bit RGB JPEG and PNG files are decoded straight into an RGBX
    buffer, from ``pool`` if given. With ``long_side``, a JPEG may be decoded smaller, by libjpeg's
    scaled IDCT (1/2, 1/4 or 1/8), as long as its long side stays at least ``long_side`` (for callers
    that downscale it further anyway).
    """
    path = Path(path)
    try:
        f = open_regular(path)
    except HeaderError as e:
        raise PhotoError(str(e)) from None
    except IsADirectoryError:
        raise PhotoError("is a folder, not a photo") from None
    except PermissionError:
        raise PhotoError("permission denied") from None
    except FileNotFoundError:
        raise PhotoError("no such file") from None
    except OSError as e:
        raise PhotoError(f"cannot read: {e.strerror or e}") from None
    with f:
        try:
            head = f.read(32)
        except OSError as e:
            raise PhotoError(f"cannot read: {e.strerror or e}") from None
        if not head:
            raise PhotoError("empty file (0 bytes)")
        kind = _sniff(head)
        if kind is None:
            raise PhotoError("not a JPEG, PNG, TIFF or WebP image")
        try:
            header = probe(f, kind)
            check_pixels(header, max_megapixels)
            f.seek(0)
            if kind == "tiff":
                photo = _read_tiff(f)
            elif kind == "png" and len(head) >= 25 and head[24] == 16:
                photo = _read_png16(f)
            else:
                photo = _read_pillow(f, pool, header, long_side)
        except (PhotoError, HeaderError) as e:
            raise PhotoError(str(e)) from None
        except MemoryError:
            raise PhotoError("too large to decode in the memory available") from None
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, KeyError) as e:
            raise PhotoError(_decode_reason(e)) from None
        except Exception as e:  # noqa: BLE001 - codecs raise their own types; all mean "damaged"
            raise PhotoError(_decode_reason(e)) from None
    decoded = sorted((photo.height, photo.width))
    # Orientation may have swapped the sides; a JPEG decoded at reduced scale was checked before the draft.
    if decoded != sorted((header.height, header.width)) and not (long_side and kind == "jpeg"):
        raise PhotoError(
            f"decoded {photo.width} x {photo.height} pixels, but the header declares {header.width} x {header.height}"
        )
    photo.source_format = kind
    return photo


def _decode_reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "truncated" in text.lower() or isinstance(error, EOFError):
        return f"truncated or damaged image ({text})"
    return f"damaged or unsupported image ({text})"


def _orientation_from_exif(exif: bytes | None) -> int:
    if not exif:
        return 1
    try:
        value = Image.Exif()
        value.load(exif)
        orientation = int(value.get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not lose the photo
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``H x W [x C]`` array, as a viewer would show it."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return np.rot90(array, 1)[::-1]
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def reset_orientation(exif: bytes) -> bytes:
    """Return the EXIF block with its orientation tag set to 1, every other byte kept as it was."""
    start = 6 if exif.startswith(b"Exif\x00\x00") else 0
    tiff = exif[start:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return exif
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, kind = struct.unpack_from(order + "HH", tiff, entry)
            if tag == _ORIENTATION_TAG and kind == 3:
                patched = bytearray(exif)
                struct.pack_into(order + "H", patched, start + entry + 8, 1)
                return bytes(patched)
    except struct.error:
        return exif
    return exif


def _split_alpha(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split ``H x W [x C]`` samples into RGB and alpha (gray is repeated to RGB)."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2), None
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2), None
    if channels == 2:
        return np.repeat(array[:, :, :1], 3, axis=2), np.ascontiguousarray(array[:, :, 1])
    if channels == 3:
        return array, None
    return array[:, :, :3], np.ascontiguousarray(array[:, :, 3])


def _finish(array: np.ndarray, orientation: int, icc: bytes | None, exif: bytes | None) -> Photo:
    rgb, alpha = _split_alpha(orient(array, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha)
    if exif:
        exif = reset_orientation(exif)
    return Photo(np.ascontiguousarray(rgb), alpha, icc or None, exif or None)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK to sRGB through the embedded profile when there is one, else by the naive formula."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass
    return image.convert("RGB")


def rgbx_buffer(pixels: np.ndarray) -> np.ndarray | None:
    """The ``H x W x 4`` bytes whose first three per pixel ``pixels`` is a view of, or None.

    8-bit photos decoded by :func:`read_photo` (and LUT results from :mod:`autohdr_cli.fastlut`) live in
    such buffers, Pillow's own layout for RGB, so they reach the codec and the LUT table without copies.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    height, width, _ = pixels.shape
    if height == 0 or width == 0 or pixels.strides != (4 * width, 4, 1):
        return None
    owner = pixels
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    start = pixels.__array_interface__["data"][0]
    owner_start = owner.__array_interface__["data"][0]
    # The fourth byte of the last pixel must lie inside memory that the owner really holds.
    if not owner.flags.c_contiguous or start < owner_start or start + 4 * height * width > owner_start + owner.nbytes:
        return None
    return np.lib.stride_tricks.as_strided(pixels, shape=(height, width, 4), strides=(4 * width, 4, 1))


class BufferPool:
    """Reuses the large RGBX pixel buffers of photos that are finished with.

    A fresh 80 MB buffer (a 20 MP photo) costs ~45 ms of page faults on first touch, about half the
    time of decoding the JPEG into it; a buffer handed back and taken again costs nothing. Only
    buffers this pool made can come back, each once, and at most ``keep`` wait unused.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._free: list[np.ndarray] = []
        # Weak: a buffer whose photo failed is simply freed with it.
        self._lent: dict[int, weakref.ref] = {}
        self._lock = threading.Lock()

    def take(self, height: int, width: int) -> np.ndarray:
        """An ``H x W x 4`` uint8 buffer (contents undefined)."""
        size = height * width * 4
        with self._lock:
            # Best fit: photos and LUT tables differ in size, and each should get its own kind back.
            fits = [i for i, buffer in enumerate(self._free) if buffer.nbytes >= size]
            if fits:
                buffer = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes))
            else:
                buffer = np.empty(size, dtype=np.uint8)
            self._lent[_address(buffer)] = weakref.ref(buffer)
        return buffer[:size].reshape(height, width, 4)

    def give(self, pixels: np.ndarray | None) -> None:
        """Hand back the buffer behind ``pixels`` (from :meth:`take`); anything else is ignored."""
        if pixels is None:
            return
        with self._lock:
            reference = self._lent.pop(_address(pixels), None)
            buffer = reference() if reference is not None else None
            if buffer is not None:
                self._free.append(buffer)
                if len(self._free) > self.keep:  # let the smallest go: a large one serves any size
                    del self._free[min(range(len(self._free)), key=lambda i: self._free[i].nbytes)]


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _map_rgbx(buffer: np.ndarray, row_step: int = 1):
    """A Pillow RGB image core whose pixel memory is ``buffer`` (``H x W x 4`` uint8), or None.

    With ``row_step`` > 1 the image holds every ``row_step``-th row (``H // row_step`` of them)."""
    height, width, _ = buffer.shape
    try:
        return Image.core.map_buffer(
            buffer, (width, height // row_step), "raw", 0, ("RGB", 4 * width * row_step, 1)
        )
    except (AttributeError, TypeError, ValueError):  # a Pillow without this private hook: copy instead
        return None


#: Formats decoded straight into an RGBX buffer (their decoders write through Pillow's image memory).
_DIRECT_FORMATS = ("JPEG", "PNG")


def _decode_into_rgbx(image: Image.Image, pool: BufferPool | None) -> np.ndarray | None:
    """Decode an 8-bit RGB file into an ``H x W x 4`` buffer (no copy afterwards), or None."""
    if image.format not in _DIRECT_FORMATS or image.mode != "RGB":
        return None
    width, height = image.size
    buffer = pool.take(height, width) if pool else np.empty((height, width, 4), dtype=np.uint8)
    core = _map_rgbx(buffer)
    if core is None:
        if pool:
            pool.give(buffer)
        return None
    image.im = core
    try:
        image.load()
    except BaseException:
        if pool:
            pool.give(buffer)
        raise
    if image.im is not core:  # Pillow replaced the memory after all: use what it decoded
        return None
    return buffer


def _read_pillow(f, pool: BufferPool | None = None, header=None, long_side: int | None = None) -> Photo:
    with Image.open(f) as image:
        if header is not None and image.size != (header.width, header.height):
            raise PhotoError(
                f"inconsistent header: {image.size[0]} x {image.size[1]} for the decoder, "
                f"{header.width} x {header.height} declared first"
            )
        if long_side and image.format == "JPEG" and max(image.size) > 2 * long_side:
            scale = long_side / max(image.size)  # draft keeps at least this size: the nearest larger 1/2^k
            image.draft(image.mode, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
        direct = _decode_into_rgbx(image, pool)
        if direct is None:
            image.load()
        exif = image.info.get("exif")
        icc = image.info.get("icc_profile")
        xmp, iptc = _pillow_xmp(image), _pillow_iptc(image)
        orientation = _orientation_from_exif(exif)
        if direct is not None:
            if orientation != 1:
                oriented = np.ascontiguousarray(orient(direct, orientation))
                if pool:
                    pool.give(direct)
                direct = oriented
            exif = reset_orientation(exif) if exif else None
            return Photo(direct[:, :, :3], None, icc or None, exif, xmp=xmp, iptc=iptc)
        mode = image.mode
        if mode == "CMYK":
            image = _cmyk_to_rgb(image)
            icc = None  # the pixels are sRGB now; a CMYK profile would describe them wrongly
        elif mode == "P" or mode == "PA":
            image = image.convert("RGBA" if ("transparency" in image.info or mode == "PA") else "RGB")
        elif mode in ("1", "YCbCr", "RGBX", "LAB", "HSV"):
            image = image.convert("RGB")
        elif mode == "La":
            image = image.convert("LA")
        elif mode == "RGBa":
            image = image.convert("RGBA")
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            array = np.asarray(image).astype(np.uint16)
        elif image.mode == "I":
            array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        elif image.mode == "F":
            array = np.asarray(image, dtype=np.float32)
        elif image.mode in ("L", "LA", "RGB", "RGBA"):
            array = np.asarray(image)
        else:
            raise PhotoError(f"unsupported colour mode {image.mode}")
    return replace(_finish(array, orientation, icc, exif), xmp=xmp, iptc=iptc)


def _pillow_xmp(image: Image.Image) -> bytes | None:
    """The XMP packet Pillow found (JPEG APP1, PNG iTXt XML:com.adobe.xmp, WebP XMP chunk), or None."""
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "surrogateescape")
    return bytes(xmp) if xmp else None


_PHOTOSHOP_APP13 = b"Photoshop 3.0\x00"


def _pillow_iptc(image: Image.Image) -> bytes | None:
    """IPTC-IIM records from a JPEG's APP13 Photoshop segment (resource 0x0404), or None."""
    for marker, payload in getattr(image, "applist", []):
        if marker == "APP13" and payload.startswith(_PHOTOSHOP_APP13):
            return _iptc_from_resources(payload[len(_PHOTOSHOP_APP13) :])
    return None


def _iptc_from_resources(data: bytes) -> bytes | None:
    """The IPTC block (resource 0x0404) among Photoshop image resources, or None."""
    position = 0
    while position + 12 <= len(data) and data[position : position + 4] == b"8BIM":
        (resource,) = struct.unpack_from(">H", data, position + 4)
        name_length = data[position + 6]
        position += 6 + (name_length + 2) // 2 * 2  # the Pascal name is padded to an even length
        if position + 4 > len(data):
            return None
        (size,) = struct.unpack_from(">I", data, position)
        position += 4
        if resource == 0x0404:
            return data[position : position + size] or None
        position += size + (size & 1)
    return None


def _read_png16(f) -> Photo:
    import imagecodecs

    data = f.read()
    array = imagecodecs.png_decode(data)
    with Image.open(io.BytesIO(data)) as header:  # metadata only; Pillow would cut the samples to 8 bits
        exif = header.info.get("exif")
        icc = header.info.get("icc_profile")
        xmp = _pillow_xmp(header)
    if array.dtype != np.uint16:
        array = array.astype(np.uint16)
    return replace(_finish(array, _orientation_from_exif(exif), icc, exif), xmp=xmp)


def _read_tiff(f) -> Photo:
    import tifffile

    # tifffile logs what it finds damaged on its own; our one line per photo says it already.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)

    with tifffile.TiffFile(f, name="photo.tif", _multifile=False) as tif:
        page = tif.pages.first  # not len(pages): that would walk every page of a file with millions
        if page is None:
            raise PhotoError("TIFF file has no image")
        array = page.asarray()
        photometric = int(page.photometric)
        tags = page.tags
        icc = tags[_ICC_TIFF_TAG].value if _ICC_TIFF_TAG in tags else None
        xmp = _tag_bytes(tags, _XMP_TIFF_TAG, tif.byteorder)
        iptc = _tag_bytes(tags, _IPTC_TIFF_TAG, tif.byteorder)
        orientation_tag = tags.get("Orientation")
        orientation = int(orientation_tag.value) if orientation_tag is not None else 1
        colormap = page.colormap if photometric == 3 else None
        planar_separate = int(page.planarconfig) == 2
    if isinstance(icc, (bytes, bytearray)):
        icc = bytes(icc)
    else:
        icc = None
    if array.ndim == 3 and planar_separate and array.shape[0] <= 4 < array.shape[2]:
        array = np.moveaxis(array, 0, 2)
    if array.ndim == 4 or array.ndim > 3 or array.ndim < 2:
        raise PhotoError(f"unsupported TIFF layout (shape {array.shape})")
    if photometric == 3 and colormap is not None:  # palette: the colormap is 16-bit RGB
        array = np.ascontiguousarray(np.moveaxis(colormap, 0, 1)[array])
    elif photometric == 0:  # min-is-white
        top = np.iinfo(array.dtype).max if array.dtype.kind == "u" else 1.0
        array = top - array
    elif photometric == 5:  # CMYK (naive: TIFF profiles are rare in real-estate work)
        ink = to_float(array)
        k = 1.0 - ink[:, :, 3:4]
        rgb = (1.0 - ink[:, :, :3]) * k
        array = quantize(rgb, array.dtype) if array.dtype.kind == "u" else rgb
        icc = None
    elif photometric not in (1, 2):
        raise PhotoError(f"unsupported TIFF colour space (photometric {photometric})")
    if array.dtype in (np.float16, np.float64):
        array = array.astype(np.float32)
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        raise PhotoError(f"unsupported TIFF sample type {array.dtype}")
    if array.ndim == 3 and array.shape[2] > 4:
        raise PhotoError(f"unsupported TIFF with {array.shape[2]} channels")
    photo = _finish(array, orientation if 1 <= orientation <= 8 else 1, icc, None)
    return replace(photo, xmp=xmp, iptc=iptc)


def _tag_bytes(tags, code: int, byteorder: str) -> bytes | None:
    """A TIFF tag's raw bytes (XMP is BYTE, IPTC is LONG or UNDEFINED), or None."""
    if code not in tags:
        return None
    value = tags[code].value
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, np.ndarray):
        value = value.astype(value.dtype.newbyteorder(byteorder)).tobytes()
    elif isinstance(value, int):
        value = struct.pack(f"{byteorder}I", value)
    elif isinstance(value, tuple):
        words = all(isinstance(v, int) and 0 <= v < 2**32 for v in value)
        value = struct.pack(f"{byteorder}{len(value)}I", *value) if value and words else b""
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


# --------------------------------------------------------------------------------------------- writing


def output_dtype(photo: Photo, fmt: str) -> np.dtype:
    """The sample type written for ``photo`` in format ``fmt``: its own where the format can hold it."""
    dtype = photo.pixels.dtype
    if fmt in ("jpeg", "webp"):
        return np.dtype(np.uint8)
    if fmt == "png" and dtype == np.float32:
        return np.dtype(np.uint16)
    return np.dtype(dtype)


def _convert_samples(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype == dtype:
        return array
    return quantize(to_float(array), dtype)


def encode_photo(
    photo: Photo, fmt: str, *, quality: int = 95, strip_metadata: bool = False, notes: list[str] | None = None
) -> bytes:
    """Encode a photo into the bytes of a ``fmt`` file (jpeg, png, tiff, webp).

    EXIF, ICC, XMP and IPTC are carried where the format holds them (unless ``strip_metadata``); a
    block the format cannot hold (EXIF over 64 KB in a JPEG) is dropped and said so in ``notes``.
    """
    dtype = output_dtype(photo, fmt)
    rgb = _convert_samples(photo.pixels, dtype)
    alpha = None if (photo.alpha is None or fmt == "jpeg") else _convert_samples(photo.alpha, dtype)
    samples = rgb if alpha is None else np.dstack([rgb, alpha])
    if fmt == "tiff" or dtype != np.uint8 or rgbx_buffer(samples) is None:
        samples = np.ascontiguousarray(samples)
    meta = Photo(photo.pixels) if strip_metadata else photo
    icc, exif, xmp, iptc = meta.icc, meta.exif, meta.xmp, meta.iptc
    notes = [] if notes is None else notes
    buffer = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        extratags = [(_ICC_TIFF_TAG, 7, len(icc), icc, True)] if icc else []
        if xmp:
            extratags.append((_XMP_TIFF_TAG, 1, len(xmp), xmp, True))
        if iptc:
            extratags.append((_IPTC_TIFF_TAG, 7, len(iptc), iptc, True))
        tifffile.imwrite(
            buffer,
            samples,
            photometric="rgb",
            extrasamples=("unassalpha",) if alpha is not None else None,
            compression="zlib",
            compressionargs={"level": 3},
            extratags=extratags,
            metadata=None,
        )
        return buffer.getvalue()
    if fmt == "png" and dtype == np.uint16:
        import imagecodecs

        data = imagecodecs.png_encode(samples, level=3)
        return _png_add_metadata(data, icc, exif, xmp)
    if fmt == "jpeg":
        return _encode_jpeg(samples, quality, meta, notes)
    if alpha is None:
        image = pillow_image(samples)
    else:
        image = Image.fromarray(samples, "RGBA")
    options: dict = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if fmt == "webp":
        if xmp:
            options["xmp"] = xmp
        image.save(buffer, "WEBP", quality=quality, method=4, **options)
    elif fmt == "png":
        image.save(buffer, "PNG", compress_level=3, **options)
        return _png_add_metadata(buffer.getvalue(), None, None, xmp)
    else:
        raise PhotoError(f"unknown output format {fmt!r}")
    return buffer.getvalue()


def pillow_image(pixels: np.ndarray, row_step: int = 1) -> Image.Image:
    """8-bit ``H x W x 3`` pixels as a Pillow RGB image: over the same memory when they sit in an RGBX
    buffer (see :func:`rgbx_buffer`), else a copy. ``row_step`` > 1 keeps every ``row_step``-th row only
    (over the same memory too: a cheap source for thumbnails)."""
    row_step = max(1, min(row_step, pixels.shape[0]))
    buffer = rgbx_buffer(pixels)
    core = _map_rgbx(buffer, row_step) if buffer is not None else None
    if core is None:
        return Image.fromarray(np.ascontiguousarray(pixels[: pixels.shape[0] // row_step * row_step : row_step]), "RGB")
    return Image.new("RGB", (0, 0))._new(core)


def _encode_jpeg(rgb: np.ndarray, quality: int, meta: Photo, notes: list[str]) -> bytes:
    """Baseline JPEG, 4:4:4, through libjpeg-turbo in imagecodecs.

    The bytes are the same as Pillow's ``save(quality=q, subsampling=0)`` (tested), but imagecodecs
    releases the GIL while it compresses and Pillow does not, so encode workers run in parallel
    (measured: 8 photos of 20 MP in 2 threads, 1.13 s with Pillow, 0.54 s here). It also reads the
    RGBX buffers photos are decoded into (see :func:`rgbx_buffer`) without a copy.
    """
    import imagecodecs

    buffer = rgbx_buffer(rgb)
    if buffer is not None:
        samples, colorspace = np.ascontiguousarray(buffer), imagecodecs.JPEG8.CS.EXT_RGBX
    else:
        samples, colorspace = np.ascontiguousarray(rgb), imagecodecs.JPEG8.CS.RGB
    data = imagecodecs.jpeg8_encode(
        samples, level=quality, colorspace=colorspace, outcolorspace=imagecodecs.JPEG8.CS.YCbCr, subsampling=(1, 1)
    )
    return _jpeg_add_metadata(bytes(data), meta, notes)


#: Largest payload of one JPEG marker segment (its length field counts itself).
_JPEG_SEGMENT_MAX = 65533
_ICC_CHUNK = _JPEG_SEGMENT_MAX - 14  # "ICC_PROFILE\0", sequence number, count
_XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _photoshop_iptc(iptc: bytes) -> bytes:
    """An APP13 payload holding IPTC-IIM records as Photoshop image resource 0x0404."""
    padding = b"\x00" * (len(iptc) & 1)
    return _PHOTOSHOP_APP13 + b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(iptc)) + iptc + padding


def _jpeg_add_metadata(data: bytes, meta: Photo, notes: list[str]) -> bytes:
    """Insert ``meta``'s EXIF and XMP (APP1), ICC (APP2, in chunks) and IPTC (APP13) after the JFIF header.

    A block too large for its JPEG segment is dropped, with a line in ``notes``: the photo matters
    more than its metadata.
    """
    icc, exif, xmp, iptc = meta.icc, meta.exif, meta.xmp, meta.iptc
    extra = b""
    if exif:
        payload = exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif
        if len(payload) > _JPEG_SEGMENT_MAX:
            notes.append(f"EXIF block of {len(payload)} bytes is too large for JPEG (64 KB at most): dropped")
        else:
            extra += _jpeg_segment(0xE1, payload)
    if xmp:
        if len(_XMP_JPEG_HEADER) + len(xmp) > _JPEG_SEGMENT_MAX:
            notes.append(f"XMP packet of {len(xmp)} bytes is too large for one JPEG segment: dropped")
        else:
            extra += _jpeg_segment(0xE1, _XMP_JPEG_HEADER + xmp)
    if icc:
        chunks = [icc[i : i + _ICC_CHUNK] for i in range(0, len(icc), _ICC_CHUNK)]
        if len(chunks) > 255:
            notes.append(f"ICC profile of {len(icc)} bytes is too large for JPEG: dropped")
        else:
            for number, chunk in enumerate(chunks, start=1):
                extra += _jpeg_segment(0xE2, b"ICC_PROFILE\x00" + bytes([number, len(chunks)]) + chunk)
    if iptc:
        payload = _photoshop_iptc(iptc)
        if len(payload) > _JPEG_SEGMENT_MAX:
            notes.append(f"IPTC block of {len(iptc)} bytes is too large for JPEG: dropped")
        else:
            extra += _jpeg_segment(0xED, payload)
    if not extra:
        return data
    position = 2
    if data[2:4] == b"\xff\xe0":
        position += 2 + struct.unpack(">H", data[4:6])[0]
    return data[:position] + extra + data[position:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_add_metadata(data: bytes, icc: bytes | None, exif: bytes | None, xmp: bytes | None = None) -> bytes:
    """Insert iCCP, eXIf and an iTXt ``XML:com.adobe.xmp`` chunk right after IHDR (before the image data)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    if xmp:
        # keyword, no compression (flag 0, method 0), empty language tag and translated keyword
        extra += _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    if not extra:
        return data
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return data[:ihdr_end] + extra + data[ihdr_end:]


def temp_name(name: str) -> str:
    """A temporary file name beside ``name``: the marker, our pid and host (so a later run can tell
    whether its writer is gone, see :func:`autohdr_cli.outputs.remove_stale_temps`), a random part."""
    # Only the end of a long name: the temporary name must fit the file system's limit too.
    return f"{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}@{name[-100:]}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    temporary = path.with_name(temp_name(path.name))
    try:
        with open(temporary, "xb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_photo(path: str | os.PathLike, photo: Photo, **options) -> None:
    """Encode ``photo`` and write it atomically to ``path``; ``options`` as for :func:`encode_for`."""
    data = encode_for(path, photo, **options)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise PhotoError(f"cannot write: {e.strerror or e}") from None


def encode_for(
    path: str | os.PathLike,
    photo: Photo,
    *,
    fmt: str | None = None,
    quality: int = 95,
    strip_metadata: bool = False,
    notes: list[str] | None = None,
) -> bytes:
    """:func:`encode_photo` in the format ``fmt`` or, without it, the one ``path``'s extension names."""
    fmt = fmt or format_of(path)
    if fmt is None:
        raise PhotoError(f"cannot tell the output format from {Path(path).name!r}")
    try:
        return encode_photo(photo, fmt, quality=quality, strip_metadata=strip_metadata, notes=notes)
    except PhotoError:
        raise
    except (OSError, ValueError) as e:
        raise PhotoError(f"cannot encode as {fmt}: {e}") from None


def load_image(path: str | os.PathLike, long_side: int | None = None) -> np.ndarray:
    """Read a photo's colour pixels as float32 ``3 x H x W`` in [0, 1] (for training and scoring);
    ``long_side``: see :func:`read_photo`."""
    return read_photo(path, long_side=long_side).to_float()
