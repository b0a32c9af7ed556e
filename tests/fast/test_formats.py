"""Every Pillow mode and format, animated files, large images and DICOM variants decode right."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from embedlab.images import ImageError, decode, scan_images, set_max_pixels

from ..conftest import skimage_image, small


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return small(skimage_image("astronaut"), 96).convert("RGB")


def _rgb(path: Path) -> np.ndarray:
    decoded = decode(path)
    arr = np.asarray(decoded.rgb)
    assert decoded.rgb.mode == "RGB" and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    return arr


def _mean_error(got: np.ndarray, want: Image.Image | np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - np.asarray(want, dtype=np.float64)).mean())


# (file name, how to make the mode from the RGB photo, mean error allowed against the photo
#  or, for grey modes, against the photo's grey version)
MODES = [
    ("mode_1.png", lambda im: im.convert("1"), "bilevel"),
    ("mode_L.png", lambda im: im.convert("L"), 0.0),
    ("mode_LA.png", lambda im: im.convert("LA"), 0.0),
    ("mode_P.png", lambda im: im.quantize(256), 12.0),
    ("mode_PA.tif", lambda im: im.quantize(256).convert("PA"), 12.0),
    ("mode_RGB.bmp", lambda im: im, 0.0),
    ("mode_RGBA.png", lambda im: im.convert("RGBA"), 0.0),
    ("mode_CMYK.tif", lambda im: im.convert("CMYK"), 1.0),
    ("mode_CMYK.jpg", lambda im: im.convert("CMYK"), 6.0),
    ("mode_YCbCr.tif", lambda im: im.convert("YCbCr"), 3.0),
    ("mode_LAB.tif", lambda im: _to_lab(im), 3.0),
]


def _to_lab(im: Image.Image) -> Image.Image:
    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    out = ImageCms.applyTransform(im, transform)
    assert out is not None
    return out


@pytest.mark.parametrize(("name", "make", "tolerance"), MODES, ids=[m[0] for m in MODES])
def test_every_pillow_mode_decodes_to_the_pictures_rgb(  # type: ignore[no-untyped-def]
    tmp_path: Path, photo: Image.Image, name, make, tolerance
) -> None:
    made = make(photo)
    made.save(tmp_path / name)
    got = _rgb(tmp_path / name)
    assert got.shape == (photo.height, photo.width, 3)
    if tolerance == "bilevel":  # dithered black and white: only 0 and 255, about as bright as the photo
        assert set(np.unique(got)) <= {0, 255}
        assert abs(got.mean() - np.asarray(photo.convert("L")).mean()) < 20
        return
    want = photo.convert("L").convert("RGB") if made.mode in ("L", "LA") else photo
    assert _mean_error(got, want) <= tolerance + 1e-9


@pytest.mark.parametrize(
    ("mode", "name", "scale"),
    [("I;16", "i16.png", 257), ("I;16B", "i16b.tif", 257), ("I", "i32.tif", 257), ("F", "f32.tif", 1 / 255)],
)
def test_high_bit_depth_and_float_images_keep_their_levels(  # type: ignore[no-untyped-def]
    tmp_path: Path, photo: Image.Image, mode, name, scale
) -> None:
    grey = np.asarray(photo.convert("L"), dtype=np.float64)
    values = grey * scale
    if mode == "F":
        img = Image.fromarray(values.astype(np.float32), mode="F")
    elif mode == "I":
        img = Image.fromarray(values.astype(np.int32), mode="I")
    elif mode == "I;16B":  # big-endian 16-bit (Pillow's convert to it clips at 255, so build it from bytes)
        img = Image.frombytes(mode, photo.size, values.astype(">u2").tobytes())
    else:
        img = Image.fromarray(values.astype(np.uint16))
    img.save(tmp_path / name)
    with Image.open(tmp_path / name) as check:
        assert check.mode == mode
    got = _rgb(tmp_path / name)[..., 0].astype(np.float64)
    if mode == "F":  # floats are stretched over their own min..max
        want = (grey - grey.min()) / (grey.max() - grey.min()) * 255.0
        assert np.abs(got - want).max() <= 1.0
    else:  # integers keep their place in the 16-bit range: not clipped to white, not stretched
        assert np.abs(got - grey).max() <= 1.0


def test_float_image_with_nan_and_inf_is_finite(tmp_path: Path) -> None:
    values = np.linspace(-3.0, 5.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    values[0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    got = _rgb(tmp_path / "nan.tif")
    assert got.min() == 0 and got.max() == 255


def test_grey_and_rgb_colour_keys_are_transparent(tmp_path: Path) -> None:
    grey = np.full((8, 8), 60, np.uint8)
    grey[:4] = 7
    Image.fromarray(grey).save(tmp_path / "key_l.png", transparency=7)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "key_rgb.png", transparency=(7, 7, 7))
    for name in ("key_l.png", "key_rgb.png"):
        got = _rgb(tmp_path / name)
        assert (got[:4] == 255).all() and (got[4:] == 60).all(), name


@pytest.mark.parametrize("ext", ["gif", "webp", "tif", "ppm", "tga", "jp2", "qoi", "pcx", "sgi", "dds"])
def test_other_pillow_formats(tmp_path: Path, photo: Image.Image, ext: str) -> None:
    path = tmp_path / f"photo.{ext}"
    photo.save(path)
    got = _rgb(path)
    assert got.shape == (photo.height, photo.width, 3)
    assert _mean_error(got, photo) < 12.0  # GIF's 256 colours and lossy WebP/JPEG 2000 included


@pytest.mark.parametrize("ext", ["gif", "png", "webp", "tif"])
def test_animated_and_multipage_files_give_the_first_frame_and_count_frames(tmp_path: Path, ext: str) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (40, 30), c) for c in colours]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    decoded = decode(path)
    assert decoded.frames == 3
    assert _mean_error(np.asarray(decoded.rgb), frames[0]) < 3.0


def test_large_jpeg_is_decoded_in_draft_mode_but_keeps_its_size(tmp_path: Path) -> None:
    big = skimage_image("astronaut").convert("RGB").resize((2048, 1536), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    decoded = decode(tmp_path / "big.jpg")
    assert (decoded.width, decoded.height) == (2048, 1536)  # the stored size, not the reduced one
    assert decoded.rgb.size == (1024, 768)  # decoded at 1/2 scale in the DCT: short side still >= 512
    reference = big.resize(decoded.rgb.size, Image.Resampling.BOX)
    assert _mean_error(np.asarray(decoded.rgb), reference) < 4.0
    # A JPEG below the draft threshold is decoded at full size.
    big.resize((1000, 750)).save(tmp_path / "mid.jpg")
    assert decode(tmp_path / "mid.jpg").rgb.size == (1000, 750)


def test_draft_scale_follows_the_backbone_input_and_the_evidence_size(tmp_path: Path) -> None:
    camera = skimage_image("astronaut").convert("RGB").resize((3000, 2000), Image.Resampling.BICUBIC)
    camera.save(tmp_path / "camera.jpg", quality=90)
    # Lite0 resizes to 256: 1/4 keeps 750x500 (1/8 would leave a 375 px long side, under
    # the 512 px that the same-picture evidence looks at).
    decoded = decode(tmp_path / "camera.jpg", draft_side=256)
    assert decoded.rgb.size == (750, 500) and (decoded.width, decoded.height) == (3000, 2000)
    assert decode(tmp_path / "camera.jpg").rgb.size == (1500, 1000)  # the rule before: short side >= 512
    wide = skimage_image("astronaut").convert("RGB").resize((4096, 1024), Image.Resampling.BICUBIC)
    wide.save(tmp_path / "wide.jpg", quality=90)
    assert decode(tmp_path / "wide.jpg", draft_side=256).rgb.size == (1024, 256)
    assert decode(tmp_path / "wide.jpg", draft_side=292).rgb.size == (2048, 512)  # Lite2's resize


def test_exif_rotated_large_jpeg_reports_the_viewed_size(tmp_path: Path) -> None:
    img = Image.new("RGB", (2400, 1200), (120, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif)
    decoded = decode(tmp_path / "rot.jpg")
    assert (decoded.width, decoded.height) == (1200, 2400)
    assert decoded.rgb.size == (600, 1200)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: the shape of a decompression bomb, a few bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# 20k x 20k is above the default 200 MP; 120k x 120k is also above Pillow's own bomb check (64x ours).
@pytest.mark.parametrize("side", [20_000, 120_000], ids=["above_our_limit", "above_pillows_bomb_limit"])
def test_pixel_limit_is_a_per_file_error_not_a_crash(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(ImageError, match=r"too large|DecompressionBomb"):
        decode(path)


def test_max_pixels_setting_moves_the_limit(tmp_path: Path, photo: Image.Image) -> None:
    photo.save(tmp_path / "p.png")
    try:
        set_max_pixels(photo.width * photo.height - 1)
        with pytest.raises(ImageError, match="too large"):
            decode(tmp_path / "p.png")
        set_max_pixels(photo.width * photo.height)
        assert decode(tmp_path / "p.png").width == photo.width
    finally:
        from embedlab.images import DEFAULT_MAX_PIXELS

        set_max_pixels(DEFAULT_MAX_PIXELS)


# -- DICOM ---------------------------------------------------------------------------


def _dicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(str(get_testdata_file(name, download=False)))


def test_extensionless_and_uid_named_dicom_files_are_found_and_decoded(tmp_path: Path) -> None:
    data = _dicom("CT_small.dcm").read_bytes()
    for name in ("IM000001", "1.2.840.113619.2.55.3.1", "ct.dcm"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "DICOMDIR").write_bytes(data)  # an export's index: never an image
    (tmp_path / "README").write_text("not an image, no DICM marker")
    (tmp_path / "notes.txt").write_bytes(data)  # a letter extension is never sniffed
    found = sorted(f.path.rsplit("/", 1)[-1] for f in scan_images(tmp_path))
    assert found == ["1.2.840.113619.2.55.3.1", "IM000001", "ct.dcm"]
    reference = np.asarray(decode(tmp_path / "ct.dcm").rgb)
    for name in found:
        decoded = decode(tmp_path / name)
        assert decoded.format == "DICOM" and np.array_equal(np.asarray(decoded.rgb), reference)


def test_dicom_with_an_image_extension_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(_dicom("MR_small.dcm").read_bytes())
    assert decode(tmp_path / "scan.png").format == "DICOM"


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
        ("SC_rgb_jpeg_dcmtk.dcm", "YBR_FULL"),  # JPEG baseline
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "YBR_FULL_422"),  # JPEG baseline, subsampled
        ("SC_rgb_dcmtk_+eb+cr.dcm", "RGB"),  # JPEG baseline without colour transform
        ("SC_rgb_gdcm_KY.dcm", "RGB"),  # JPEG 2000
        ("SC_rgb_rle_16bit.dcm", "RGB"),  # 16 bits per sample, RLE
        ("SC_rgb_rle_2frame.dcm", "RGB"),  # two frames, RLE
    ],
)
def test_dicom_colour_encodings_decode_to_the_same_rgb(name: str, photometric: str) -> None:
    """dcmtk/gdcm encodings of one colour test card: all match its lossless RGB (RLE) version."""
    reference = np.asarray(decode(_dicom("SC_rgb_rle.dcm")).rgb, dtype=np.int16)
    assert np.abs(reference[..., 0] - reference[..., 1]).mean() > 20  # a colour picture, not grey
    decoded = decode(_dicom(name))
    assert decoded.mode == f"DICOM {photometric}"
    assert _mean_error(np.asarray(decoded.rgb), reference) < 4.0


def test_dicom_palette_colour_goes_through_its_lookup_table() -> None:
    import pydicom
    from pydicom.pixels import apply_color_lut

    path = _dicom("examples_palette.dcm")
    decoded = decode(path)
    ds = pydicom.dcmread(path)
    want = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 257.0  # 16-bit LUT entries
    arr = np.asarray(decoded.rgb)
    assert decoded.mode == "DICOM PALETTE COLOR" and arr.shape == want.shape
    assert np.abs(arr - want).mean() < 2.0 and np.abs(arr[..., 0].astype(int) - arr[..., 2]).mean() > 5


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"])
def test_compressed_dicom_transfer_syntaxes_decode_like_uncompressed(name: str) -> None:
    got = np.asarray(decode(_dicom(name)).rgb)
    want = np.asarray(decode(_dicom("MR_small.dcm")).rgb)
    assert np.array_equal(got, want)


def test_dicom_transfer_syntax_without_a_decoder_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="JPEG-LS"):
        decode(_dicom("MR_small_jpeg_ls_lossless.dcm"))


def test_multiframe_dicom_gives_frame_zero_and_its_frame_count() -> None:
    import pydicom

    decoded = decode(_dicom("examples_ybr_color.dcm"))
    ds = pydicom.dcmread(_dicom("examples_ybr_color.dcm"))
    assert decoded.frames == 30 and decoded.rgb.size == (320, 240)
    assert np.abs(np.asarray(decoded.rgb, np.float64) - ds.pixel_array[0]).mean() < 1e-9


def test_dicom_keeps_modality_and_body_part(tmp_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    ds.BodyPartExamined = "CHEST"
    ds.save_as(tmp_path / "chest.dcm")
    decoded = decode(tmp_path / "chest.dcm")
    assert (decoded.modality, decoded.body_part, decoded.width, decoded.height) == ("CT", "CHEST", 128, 128)
