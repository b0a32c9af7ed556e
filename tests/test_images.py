"""Every encoding of the same picture reaches the backbone as the same RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.backbones import Backbone
from embedlab.images import ImageError, decode, display_root, quality_metrics, scan_images

from .conftest import skimage_image, small


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return small(skimage_image("chelsea")).convert("RGB")


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def test_sixteen_bit_grey_png_keeps_its_levels(tmp_path: Path, photo: Image.Image) -> None:
    grey = np.asarray(photo.convert("L"), dtype=np.uint16)
    path = _save(Image.fromarray(grey * 257), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(decode(path).rgb)
    assert rgb.shape == (*grey.shape, 3)
    assert np.array_equal(rgb[..., 0], grey)  # not clipped to white
    assert rgb.mean() < 200


def test_twelve_bit_medical_range_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    rgb = np.asarray(decode(_save(Image.fromarray(ramp), tmp_path / "ct.png")).rgb)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    assert 100 < rgb.mean() < 155


@pytest.mark.parametrize(
    ("name", "convert", "kwargs", "tolerance"),
    [
        ("palette.png", lambda im: im.quantize(256), {}, 40.0),
        ("rgba.png", lambda im: im.convert("RGBA"), {}, 0.0),
        ("grey_la.png", lambda im: im.convert("LA"), {}, None),
        ("cmyk.jpg", lambda im: im.convert("CMYK"), {"quality": 95}, 6.0),
        ("plain.jpg", lambda im: im, {"quality": 95}, 6.0),
    ],
)
def test_encodings_decode_to_the_same_rgb(tmp_path: Path, photo: Image.Image, name, convert, kwargs, tolerance) -> None:  # type: ignore[no-untyped-def]
    decoded = decode(_save(convert(photo), tmp_path / name, **kwargs))
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == photo.size
    got = np.asarray(decoded.rgb, dtype=np.float64)
    want = np.asarray(photo if tolerance is not None else photo.convert("L").convert("RGB"), dtype=np.float64)
    assert np.abs(got - want).mean() <= (tolerance if tolerance is not None else 0.0) + 1e-9


def test_exif_orientation_is_applied(tmp_path: Path, photo: Image.Image) -> None:
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # stored turned 90 degrees counter-clockwise...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and tagged "rotate 90 degrees clockwise to view"
    path = _save(rotated, tmp_path / "exif.jpg", exif=exif, quality=95)
    shown = decode(path).rgb
    assert shown.size == photo.size
    assert np.abs(np.asarray(shown, np.float64) - np.asarray(photo, np.float64)).mean() < 6.0


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(decode(_save(clear, tmp_path / "clear.png")).rgb).min() == 255


def test_encoding_variants_embed_alike(tmp_path: Path, photo: Image.Image, backbone: Backbone) -> None:
    grey = np.asarray(photo.convert("L"), dtype=np.uint16)
    paths = [
        _save(photo.convert("L"), tmp_path / "l8.png"),
        _save(Image.fromarray(grey * 257), tmp_path / "l16.png"),
    ]
    a, b = backbone.embed([decode(p).rgb for p in paths])
    assert float(a @ b) > 0.9999


@pytest.mark.parametrize(
    "payload",
    [b"", b"not an image at all", None],
    ids=["empty", "garbage", "truncated"],
)
def test_broken_files_raise_one_line_errors(tmp_path: Path, photo: Image.Image, payload: bytes | None) -> None:
    if payload is None:
        buf = io.BytesIO()
        photo.save(buf, format="PNG")
        payload = buf.getvalue()[: len(buf.getvalue()) // 3]
    path = tmp_path / "bad.png"
    path.write_bytes(payload)
    with pytest.raises(ImageError) as info:
        decode(path)
    assert "\n" not in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_scan_is_recursive_sorted_and_keeps_the_users_spelling(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs" / "b").mkdir(parents=True)
    (tmp_path / "imgs" / ".hidden").mkdir()
    for rel in ("z.png", "b/a.jpg", ".hidden/x.png", "notes.txt", ".dot.png"):
        (tmp_path / "imgs" / rel).write_bytes(b"x")
    assert [f.path for f in scan_images("./imgs/")] == ["imgs/b/a.jpg", "imgs/z.png"]
    assert display_root("./imgs/") == "imgs"


def test_quality_metrics_separate_blank_from_photo(photo: Image.Image) -> None:
    blank = quality_metrics(Image.new("RGB", (64, 64), (255, 255, 255)))
    real = quality_metrics(photo)
    assert blank["entropy"] == 0.0 and blank["contrast"] == 0.0 and blank["sharpness"] == 0.0
    assert real["entropy"] > 5 and real["contrast"] > 0.1 and real["sharpness"] > 10


def test_dicom_ct_is_windowed_not_flat(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = decode(get_testdata_file("CT_small.dcm", download=False))
    arr = np.asarray(ct.rgb)
    assert ct.format == "DICOM" and ct.mode == "DICOM MONOCHROME2" and arr.shape == (128, 128, 3)
    assert arr.min() == 0 and arr.max() == 255 and arr.std() > 30


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    source = get_testdata_file("MR_small.dcm", download=False)
    ds = pydicom.dcmread(source)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inverted.dcm")
    normal = np.asarray(decode(source).rgb, dtype=np.int16)
    inverted = np.asarray(decode(tmp_path / "inverted.dcm").rgb, dtype=np.int16)
    assert np.array_equal(normal, 255 - inverted)


def test_dicom_without_pixels_is_a_one_line_error() -> None:
    from pydicom.data import get_testdata_file

    with pytest.raises(ImageError, match="no image"):
        decode(get_testdata_file("rtplan.dcm", download=False))


def test_scan_finds_dicom_files(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    (tmp_path / "scan.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes())
    assert [f.path.rsplit("/", 1)[-1] for f in scan_images(tmp_path)] == ["scan.dcm"]
