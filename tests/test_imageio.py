"""Reading and writing every kind of photo we accept, through the CLI and the library."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from autohdr_cli.imageio import (
    BufferPool,
    Photo,
    PhotoError,
    pillow_image,
    read_photo,
    reset_orientation,
    write_photo,
)

from conftest import gradient, save_rgb


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _enhance(run, tmp_path, look, *extra):
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "-q", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_16bit_tiff_stays_16bit_and_matches_the_float_lookup(tmp_path, run, look):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (12, 20, 3), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "deep.tif", pixels, photometric="rgb")
    _enhance(run, tmp_path, look)
    out = tifffile.imread(tmp_path / "out" / "deep.tif")
    assert out.dtype == np.uint16 and out.shape == pixels.shape
    # 16-bit precision survives: outputs use far more than 256 distinct levels.
    assert len(np.unique(out)) > 300


def test_16bit_png_is_read_and_written_at_16_bits(tmp_path, run, look):
    pixels = np.random.default_rng(1).integers(0, 65536, (10, 14, 3), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deep.png").write_bytes(imagecodecs.png_encode(pixels))
    assert read_photo(tmp_path / "in" / "deep.png").pixels.dtype == np.uint16
    _enhance(run, tmp_path, look)
    out = imagecodecs.png_decode((tmp_path / "out" / "deep.png").read_bytes())
    assert out.dtype == np.uint16 and out.shape == pixels.shape
    assert len(np.unique(out)) > 300


def test_16bit_gray_png_becomes_16bit_rgb(tmp_path):
    gray = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    path = tmp_path / "g16.png"
    path.write_bytes(imagecodecs.png_encode(gray))
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16 and photo.pixels.shape == (16, 16, 3)
    assert (photo.pixels[..., 0] == gray).all()


def test_rgba_alpha_is_carried_untouched(tmp_path, run, look):
    rgba = np.dstack([gradient(), np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)])
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "a.png")
    _enhance(run, tmp_path, look)
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (16, 24, 4)
    assert (out[..., 3] == rgba[..., 3]).all()
    assert not (out[..., :3] == rgba[..., :3]).all()


def test_gray_palette_and_cmyk_inputs_come_out_as_rgb(tmp_path, run, look):
    (tmp_path / "in").mkdir()
    base = Image.fromarray(gradient())
    base.convert("L").save(tmp_path / "in" / "gray.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "in" / "palette.png")
    base.convert("CMYK").save(tmp_path / "in" / "cmyk.jpg", quality=95)
    _enhance(run, tmp_path, look)
    for name in ("gray.png", "palette.png", "cmyk.jpg"):
        out = Image.open(tmp_path / "out" / name)
        assert out.mode == "RGB" and out.size == (24, 16), name
    # The CMYK photo is converted to RGB colours, not read as inverted or garbled channels.
    cmyk = np.asarray(Image.open(tmp_path / "out" / "cmyk.jpg")).astype(float)
    rgb = np.asarray(Image.open(tmp_path / "out" / "gray.png")).astype(float)
    assert abs(cmyk.mean() - np.asarray(base).mean()) < 40 and rgb.std() > 10


def test_palette_with_transparency_keeps_its_alpha(tmp_path):
    image = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    image.save(tmp_path / "t.png", transparency=0)
    photo = read_photo(tmp_path / "t.png")
    assert photo.alpha is not None and (photo.alpha == 0).any() and (photo.alpha == 255).any()


def _exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    exif[0x010F] = "TestCam"  # Make, to check other tags survive
    return exif.tobytes()


def test_exif_orientation_6_is_applied_and_reset_and_exif_kept(tmp_path, run, look):
    pixels = gradient(16, 24)
    save_rgb(tmp_path / "in" / "rot.jpg", pixels, exif=_exif_with_orientation(6), quality=95)
    _enhance(run, tmp_path, look)
    out = Image.open(tmp_path / "out" / "rot.jpg")
    assert out.size == (16, 24)  # width and height swapped: rotated 90 degrees clockwise
    exif = out.getexif()
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "TestCam"
    # Rotated clockwise: the input's bottom-left corner is now the top-left corner.
    photo = read_photo(tmp_path / "in" / "rot.jpg")
    assert photo.pixels.shape == (24, 16, 3)
    source = np.asarray(Image.open(tmp_path / "in" / "rot.jpg")).astype(int)
    assert np.abs(photo.pixels[0, 0].astype(int) - source[-1, 0]).max() <= 2


def test_icc_profile_is_kept_and_can_be_stripped(tmp_path, run, look):
    icc = _srgb_icc()
    save_rgb(tmp_path / "in" / "p.jpg", icc_profile=icc, exif=_exif_with_orientation(1))
    save_rgb(tmp_path / "in" / "p.webp", icc_profile=icc)
    tifffile.imwrite(tmp_path / "in" / "p.tif", gradient(), photometric="rgb", extratags=[(34675, 7, len(icc), icc, True)])
    _enhance(run, tmp_path, look)
    for name in ("p.jpg", "p.webp"):
        assert Image.open(tmp_path / "out" / name).info.get("icc_profile") == icc, name
    assert read_photo(tmp_path / "out" / "p.tif").icc == icc
    assert Image.open(tmp_path / "out" / "p.jpg").getexif().get(0x0112) == 1
    run("enhance", tmp_path / "in", tmp_path / "stripped", "--lut", look, "-q", "--strip-metadata")
    for name in ("p.jpg", "p.webp"):
        stripped = Image.open(tmp_path / "stripped" / name)
        assert not stripped.info.get("icc_profile") and len(stripped.getexif()) == 0, name
    assert read_photo(tmp_path / "stripped" / "p.tif").icc is None


def test_16bit_png_carries_icc_and_exif(tmp_path):
    photo = Photo(np.full((4, 5, 3), 40000, np.uint16), icc=_srgb_icc(), exif=_exif_with_orientation(1))
    write_photo(tmp_path / "x.png", photo)
    back = read_photo(tmp_path / "x.png")
    assert back.pixels.dtype == np.uint16 and (back.pixels == 40000).all()
    assert back.icc == photo.icc
    assert Image.open(tmp_path / "x.png").getexif().get(0x010F) == "TestCam"


def test_jpeg_output_is_444_at_quality_95(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "p.png")
    _enhance(run, tmp_path, look, "--format", "jpg")
    from PIL import JpegImagePlugin

    out = Image.open(tmp_path / "out" / "p.jpg")
    assert JpegImagePlugin.get_sampling(out) == 0  # 4:4:4


def test_reset_orientation_touches_only_that_tag():
    exif = _exif_with_orientation(8)
    assert exif.startswith(b"Exif\x00\x00")
    patched = reset_orientation(exif)
    assert len(patched) == len(exif)
    assert reset_orientation(exif[6:])[:2] in (b"II", b"MM")  # a bare TIFF block works too
    loaded = Image.Exif()
    loaded.load(patched)
    assert loaded[0x0112] == 1 and loaded[0x010F] == "TestCam"


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, not a photo", "not a JPEG, PNG, TIFF or WebP image"),
    ],
)
def test_bad_bytes_give_a_short_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(PhotoError, match=reason):
        read_photo(path)


def test_truncated_jpeg_is_reported_as_truncated(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(gradient(64, 64)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(PhotoError, match="truncated"):
        read_photo(path)


@pytest.mark.parametrize("name", ["p.jpg", "p.png"])
def test_8bit_rgb_decodes_exactly_as_pillow_does(tmp_path, name):
    # JPEG and PNG are decoded straight into an RGBX buffer: the pixels must be Pillow's, bit for bit.
    save_rgb(tmp_path / name, gradient(37, 53, seed=4), quality=90)
    photo = read_photo(tmp_path / name)
    assert photo.pixels.shape == (37, 53, 3) and photo.pixels.dtype == np.uint8
    assert np.array_equal(photo.pixels, np.asarray(Image.open(tmp_path / name).convert("RGB")))


@pytest.mark.parametrize(
    "icc, exif",
    [(None, None), ("srgb", "exif"), ("large", "exif"), ("srgb", None), (None, "exif")],
)
def test_jpeg_files_are_the_bytes_pillow_writes(tmp_path, icc, exif):
    # Our JPEG encoder (libjpeg-turbo through imagecodecs, run without the GIL) must write what
    # Pillow's save(quality, subsampling=0) writes, metadata included; a large profile spans several
    # APP2 segments.
    profile = {"srgb": _srgb_icc(), "large": _srgb_icc() + bytes(range(256)) * 600, None: None}[icc]
    exif_bytes = _exif_with_orientation(1) if exif else None
    pixels = gradient(29, 41, seed=7)
    write_photo(tmp_path / "ours.jpg", Photo(pixels, icc=profile, exif=exif_bytes), quality=90)
    options = {k: v for k, v in (("icc_profile", profile), ("exif", exif_bytes)) if v}
    Image.fromarray(pixels).save(tmp_path / "pillow.jpg", quality=90, subsampling=0, **options)
    assert (tmp_path / "ours.jpg").read_bytes() == (tmp_path / "pillow.jpg").read_bytes()
    back = Image.open(tmp_path / "ours.jpg")
    assert back.info.get("icc_profile") == profile


def test_decoded_photo_writes_the_same_jpeg_as_a_plain_array(tmp_path):
    # A decoded photo sits in an RGBX buffer and goes to the encoder without a copy; the file must
    # not depend on that.
    save_rgb(tmp_path / "in.png", gradient(23, 31, seed=8))
    photo = read_photo(tmp_path / "in.png")
    write_photo(tmp_path / "a.jpg", photo)
    write_photo(tmp_path / "b.jpg", photo.with_pixels(np.ascontiguousarray(photo.pixels)))
    write_photo(tmp_path / "a.webp", photo)
    write_photo(tmp_path / "b.webp", photo.with_pixels(np.ascontiguousarray(photo.pixels)))
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
    assert (tmp_path / "a.webp").read_bytes() == (tmp_path / "b.webp").read_bytes()


def test_buffer_pool_reuses_the_best_fitting_buffer_and_keeps_few():
    pool = BufferPool(keep=2)
    small, large = pool.take(10, 10), pool.take(20, 20)
    small_address, large_address = small.ctypes.data, large.ctypes.data
    pool.give(small)
    pool.give(large)
    pool.give(large)  # twice: ignored
    pool.give(np.empty((10, 10, 4), np.uint8))  # not the pool's: ignored
    assert pool.take(5, 5).ctypes.data == small_address  # the smallest that fits
    again = pool.take(15, 15)
    assert again.ctypes.data == large_address and again.shape == (15, 15, 4)
    taken = [pool.take(8, 8) for _ in range(4)]
    for buffer in taken:
        pool.give(buffer)
    assert len({pool.take(8, 8).ctypes.data for _ in range(4)} & {b.ctypes.data for b in taken}) == 2


@pytest.mark.parametrize("decoded", [True, False])
def test_pillow_image_keeps_every_nth_row_over_the_same_pixels(tmp_path, decoded):
    save_rgb(tmp_path / "in.png", gradient(23, 9, seed=3))
    pixels = read_photo(tmp_path / "in.png").pixels  # an RGBX buffer: mapped, not copied
    if not decoded:
        pixels = np.ascontiguousarray(pixels)  # a plain array: copied
    height = pixels.shape[0]
    assert height > 5
    for step in (1, 3, 5, 40):
        rows = min(step, height)  # a step past the height keeps the first row
        expected = pixels[: height // rows * rows : rows]
        np.testing.assert_array_equal(np.asarray(pillow_image(pixels, step)), expected)
