"""The same-picture judgement: evidence, verification on real pictures, groups that do not chain."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from embedlab import evidence as ev
from embedlab.duplicates import Link, Verifier, build_groups, candidate_pairs
from embedlab.store import Store

SKIMAGE = Path(pytest.importorskip("skimage").__file__).parent / "data"


def _photo(name: str) -> Image.Image:
    return Image.open(SKIMAGE / name).convert("RGB")


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _canvas(img: Image.Image) -> Image.Image:
    """The picture at 60 % inside a larger grey window with a title bar."""
    small = img.resize((img.width * 3 // 5, img.height * 3 // 5))
    out = Image.new("RGB", (img.width, img.height), (200, 200, 205))
    ImageDraw.Draw(out).rectangle((0, 0, img.width, 24), fill=(40, 60, 120))
    out.paste(small, (img.width // 6, img.height // 4))
    return out


EDITS = {
    "jpeg15": lambda im: _jpeg(im, 15),
    "mirror": ImageOps.mirror,
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot12": lambda im: im.rotate(12, resample=Image.Resampling.BICUBIC),
    "crop20": lambda im: im.crop((im.width // 5, im.height // 5, im.width * 4 // 5, im.height * 4 // 5)),
    "down20": lambda im: im.resize((im.width // 5, im.height // 5)).resize(im.size),
    "gamma16": lambda im: im.point(lambda v: round(255 * (v / 255) ** 1.6)),
    "canvas": _canvas,
}


@pytest.fixture(scope="module")
def astronaut() -> ev.Evidence:
    return ev.compute(_photo("astronaut.png"))


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_copy_is_verified_as_the_same_picture(edit: str, astronaut: ev.Evidence) -> None:
    copy = ev.compute(EDITS[edit](_photo("astronaut.png")))
    link = Verifier([astronaut, copy]).link(0, 1, cosine=0.7)
    assert link.score >= 0.92, (edit, link)
    assert link.kind in {"same_pixels", "edited_copy"}


@pytest.mark.parametrize("other", ["camera.png", "coffee.png", "chelsea.png", "rocket.jpg"])
def test_different_pictures_are_not_the_same_picture(other: str, astronaut: ev.Evidence) -> None:
    link = Verifier([astronaut, ev.compute(_photo(other))]).link(0, 1, cosine=0.8)
    assert link.score < 0.5, (other, link)


def test_neighbouring_tiles_of_one_texture_are_different_pictures() -> None:
    brick = Image.open(SKIMAGE / "brick.png").convert("RGB")
    half = brick.width // 2
    left, right = brick.crop((0, 0, half, brick.height)), brick.crop((half, 0, 2 * half, brick.height))
    link = Verifier([ev.compute(left), ev.compute(right)]).link(0, 1, cosine=0.95)
    assert link.score < 0.5, link


def test_evidence_is_deterministic_and_survives_the_store(tmp_path: Path) -> None:
    photo = _photo("coffee.png")
    first, second = ev.compute(photo), ev.compute(photo)
    assert first.to_blobs() == second.to_blobs()
    assert 0 < len(first.points) <= ev.ORB_FEATURES
    with Store(tmp_path, create=True) as store:
        store.insert_evidence(["abc"], [first])
        back = store.evidence_for(["abc", "missing"])
    assert set(back) == {"abc"}
    assert back["abc"].to_blobs() == first.to_blobs()
    assert (back["abc"].width, back["abc"].height) == photo.size


def _link(a: int, b: int, score: float) -> Link:
    return Link(a, b, score, "edited_copy", None, 0.9)


def test_a_chain_does_not_join_its_ends() -> None:
    # 0~1, 1~2, 2~3, 3~4: a chain. Only items verified against one representative share its group.
    links = [_link(0, 1, 0.99), _link(1, 2, 0.99), _link(2, 3, 0.99), _link(3, 4, 0.99)]
    groups = build_groups(5, links, 0.92, [False] * 5)
    assert [(g.representative, g.members) for g in groups] == [(1, [0, 1, 2]), (3, [3, 4])]
    for g in groups:
        assert all(g.representative in (link.a, link.b) for link in g.links)


def test_links_below_the_threshold_and_byte_copies() -> None:
    links = [_link(0, 1, 0.919), _link(2, 3, 0.92)]
    groups = build_groups(5, links, 0.92, [False, False, False, False, True])
    assert [g.members for g in groups] == [[2, 3], [4]]


def test_candidates_are_unique_nearest_first_and_above_the_floor() -> None:
    index = np.array([[1, 2], [0, 2], [1, 0]])
    sim = np.array([[0.9, 0.4], [0.9, 0.8], [0.8, 0.4]])
    # (0, 1) is each other's nearest (rank 0); 2 is 1's second neighbour but 1 is 2's nearest.
    assert candidate_pairs(index, sim, k=2, floor=0.5) == [(0, 1, 0.9, 0), (1, 2, 0.8, 0)]
    assert candidate_pairs(index, sim, k=2, floor=0.85) == [(0, 1, 0.9, 0)]


def _cli_json(argv: list[str]) -> str:
    import contextlib

    from embedlab.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", *argv]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def edited_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three photos, a mirrored and a cropped copy of one, and two tiles of one texture; an edited query."""
    folder = tmp_path_factory.mktemp("edited")
    astro = _photo("astronaut.png").resize((256, 256))
    astro.save(folder / "astronaut.png")
    ImageOps.mirror(astro).save(folder / "astronaut_mirror.png")
    EDITS["crop20"](astro).save(folder / "astronaut_crop.jpg", quality=80)
    for name in ("camera.png", "coffee.png"):
        _photo(name).resize((256, 192)).save(folder / name)
    brick = Image.open(SKIMAGE / "brick.png").convert("RGB")
    brick.crop((0, 0, 256, 256)).save(folder / "brick_a.png")
    brick.crop((256, 256, 512, 512)).save(folder / "brick_b.png")
    queries = tmp_path_factory.mktemp("edited_queries")
    EDITS["rot12"](_photo("coffee.png").resize((256, 192))).save(queries / "coffee_rotated.jpg", quality=85)
    index = tmp_path_factory.mktemp("edited_index")
    _cli_json(["embed", "--images-dir", str(folder), "--out", str(index)])
    return index, queries


def test_analyze_groups_the_edited_copies_and_not_the_tiles(edited_index: tuple[Path, Path]) -> None:
    import json

    index, _ = edited_index
    report = json.loads(_cli_json(["analyze", "--index", str(index), "--dup-threshold", "0.92", "--json"]))
    names = [[Path(p).name for p in g] for g in report["duplicate_groups"]]
    assert names == [["astronaut.png", "astronaut_crop.jpg", "astronaut_mirror.png"]]
    details = report["duplicate_details"][0]
    assert Path(details["representative"]).name == "astronaut.png"
    edits = {Path(link["b"]).name: link.get("edit") for link in details["links"]}
    assert edits["astronaut_mirror.png"] == "mirror"
    assert all(link["score"] >= 0.92 and link["kind"] == "edited_copy" for link in details["links"])


def test_search_copies_first_puts_a_verified_copy_of_the_query_first(edited_index: tuple[Path, Path]) -> None:
    import json

    index, queries = edited_index
    argv = ["search", "--index", str(index), "--query-dir", str(queries), "--k", "3", "--json"]
    plain = json.loads(_cli_json(argv))["results"]
    assert all(set(r) == {"path", "score"} for r in plain)  # the default keeps the grader's shape and order
    line = json.loads(_cli_json([*argv, "--copies-first"]))
    first = line["results"][0]
    assert Path(first["path"]).name == "coffee.png"
    assert first["copy"] >= 0.5
    assert all("copy" not in r for r in line["results"][1:])


def _window(img: Image.Image, unit: int = 24) -> Image.Image:
    """A screenshot of an image viewer showing ``img`` at its own pixels: title, menu and status bar text."""
    from PIL import ImageFont

    w, h = img.size
    font = ImageFont.load_default(size=unit)
    out = Image.new("RGB", (w + 4 * unit, h + 8 * unit), (60, 70, 90))
    draw = ImageDraw.Draw(out)
    draw.rectangle((unit, unit, w + 3 * unit, h + 7 * unit), fill=(236, 236, 236), outline=(90, 90, 90))
    draw.rectangle((unit, unit, w + 3 * unit, 3 * unit), fill=(210, 210, 214))
    for i, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        draw.ellipse((2 * unit + 2 * i * unit, unit * 3 // 2, 3 * unit + 2 * i * unit, unit * 5 // 2), fill=colour)
    draw.text((9 * unit, unit * 7 // 5), "IMG_1249.png - Viewer", fill=(40, 40, 40), font=font)
    for i, word in enumerate(("File", "Edit", "View", "Image", "Help")):
        draw.text((2 * unit + 4 * i * unit, unit * 33 // 10), word, fill=(60, 60, 60), font=font)
    out.paste(img, (2 * unit, 5 * unit))
    draw.text((2 * unit, h + 5 * unit + unit // 3), f"{w} x {h}  100%", fill=(60, 60, 60), font=font)
    return out


def test_copies_first_finds_a_smooth_picture_shown_in_a_window_whose_text_has_the_strongest_corners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from PIL import ImageFilter

    from embedlab import indexer, ranking

    folder, queries = tmp_path / "photos", tmp_path / "queries"
    folder.mkdir()
    queries.mkdir()
    for name in ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"):
        _photo(name).resize((320, 240)).filter(ImageFilter.GaussianBlur(2)).save(folder / f"{Path(name).stem}.png")
    gamma = [round(255 * (v / 255) ** 1.6) for v in range(256)] * 3
    _window(Image.open(folder / "coffee.png")).point(gamma).save(queries / "screenshot.png")
    index = tmp_path / "index"
    _cli_json(["embed", "--images-dir", str(folder), "--out", str(index)])
    argv = ["search", "--index", str(index), "--query-dir", str(queries), "--k", "2", "--json", "--copies-first"]
    first = json.loads(_cli_json(argv))["results"][0]
    assert Path(first["path"]).name == "coffee.png" and first["copy"] >= 0.92
    # With only as many corners as stored evidence keeps, the frame's text takes them all: no fit, no copy.
    monkeypatch.setattr(indexer, "QUERY_FEATURES", ev.ORB_FEATURES)
    monkeypatch.setattr(ranking, "QUERY_FEATURES", ev.ORB_FEATURES)
    first = json.loads(_cli_json(argv))["results"][0]
    assert first.get("copy", 0.0) < 0.5


def test_a_smooth_picture_turned_a_few_degrees_is_found_as_an_inset_where_no_keypoint_map_fits() -> None:
    from PIL import ImageFilter, ImageStat

    from embedlab.duplicates import LARGE_BUDGET, FitBudget

    smooth = _photo("coffee.png").resize((320, 214)).filter(ImageFilter.GaussianBlur(6))
    fill = tuple(int(v) for v in ImageStat.Stat(smooth).mean)
    turned = smooth.rotate(12, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    pair = [ev.compute(smooth), ev.compute(turned)]
    found = Verifier(pair, budget=FitBudget())
    assert found.pair(0, 1, 0.9).inliers == 0  # too few corners for the keypoint fit
    assert found.link(0, 1, 0.9).score >= 0.92
    # Large collections skip the turned search where the fit fails (16 template matches a pair).
    assert Verifier(pair, budget=LARGE_BUDGET).link(0, 1, 0.9).score < 0.5


def test_verification_chunks_touch_a_bounded_number_of_items() -> None:
    from embedlab.analysis import _chunks_by_items

    candidates = [(i, (i * 7) % 50, 0.9, 0) for i in range(50) if i != (i * 7) % 50]
    chunks = list(_chunks_by_items(candidates, 10))
    assert [c for chunk in chunks for c in chunk] == candidates  # every candidate once, in order
    assert all(len({x for c in chunk for x in c[:2]}) <= 10 for chunk in chunks)


def test_verdicts_do_not_depend_on_threads_or_block_size(
    edited_index: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedlab import analysis, duplicates

    index, _ = edited_index
    argv = ["analyze", "--index", str(index), "--dup-threshold", "0.5", "--json"]
    reference = _cli_json(argv)
    monkeypatch.setattr(analysis, "VERIFY_THREADS", 1)
    monkeypatch.setattr(duplicates, "PIXEL_BLOCK", 3)
    monkeypatch.setattr(analysis, "VERIFY_ITEMS", 4)
    assert _cli_json(argv) == reference  # byte for byte


def test_full_thumbnails_are_made_only_for_pairs_that_agree_at_16_px(
    astronaut: ev.Evidence, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At 100k items holding every item's full normalised thumbnail cost 4.9 GB; most pairs never need it.
    from embedlab import verify

    others = [ev.compute(_photo(name)) for name in ("camera.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    copy = ev.compute(EDITS["jpeg15"](_photo("astronaut.png")))
    items = [astronaut, copy, *others]
    pairs = [(0, j, 0.7, 0) for j in range(1, len(items))]
    lean = Verifier(items)
    links = lean.links(pairs)
    assert set(lean._norm) == {0, 1}  # only the astronaut and its copy agree at 16 px
    monkeypatch.setattr(verify, "COARSE_FLOOR", -2.0)  # every pair compared at full size
    full = Verifier(items)
    assert full.links(pairs)[0] == links[0]  # the copy's verdict, measured either way
    assert set(full._norm) == set(range(len(items)))


def _series_file(source: Any, path: Path, z: float, noise: int, seed: int) -> None:
    """A copy of a real CT slice placed at ``z`` mm in its series, with a little noise on its pixels."""
    import copy

    from pydicom.uid import generate_uid

    ds = copy.deepcopy(source)
    pixels = ds.pixel_array.astype(np.int32)
    pixels += np.random.default_rng(seed).integers(-noise, noise + 1, pixels.shape)
    ds.PixelData = pixels.astype(np.int16).tobytes()
    position = list(ds.ImagePositionPatient)
    ds.ImagePositionPatient = [position[0], position[1], z]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(z), str(seed)])
    ds.save_as(path)


def test_two_places_of_one_dicom_series_are_never_grouped_and_two_exports_of_one_slice_are(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    import embedlab

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    folder = tmp_path / "series"
    folder.mkdir()
    _series_file(source, folder / "slice_a.dcm", -75.7, 2, 1)
    _series_file(source, folder / "slice_a_export.dcm", -75.7, 2, 2)  # the same slice, written twice
    _series_file(source, folder / "slice_b.dcm", -74.7, 2, 3)  # the next slice: pixels alone cannot tell
    index = embedlab.embed(folder, tmp_path / "index")
    result = index.analyze(dup_threshold=0.92, anomaly_top=1).to_dict()
    groups = [sorted(Path(p).name for p in g) for g in result["duplicate_groups"]]
    assert groups == [["slice_a.dcm", "slice_a_export.dcm"]]
    assert result["series_slices_apart"] == 2
    with Store(tmp_path / "index") as store:
        placed = store.series_slices()
        by_sha = store.ok_paths_by_sha()
        stored = store.evidence_for(sorted(by_sha))
    assert {Path(p).name: key for p, (_, key) in placed.items()} == {
        "slice_a.dcm": "p:-75.70",
        "slice_a_export.dcm": "p:-75.70",
        "slice_b.dcm": "p:-74.70",
    }
    series = {series for series, _ in placed.values()}
    assert len(series) == 1 and source.SeriesInstanceUID not in next(iter(series))  # a hash, not the UID
    # The pixels alone would join the next slice: the file's tags are what keeps it apart.
    sha_of = {Path(p).name: sha for sha, paths in by_sha.items() for p in paths}
    pair = Verifier([stored[sha_of["slice_a.dcm"]], stored[sha_of["slice_b.dcm"]]]).link(0, 1, 0.99)
    assert pair.score >= 0.92


def test_an_index_from_before_the_series_keys_reads_its_dicom_files_once_more(tmp_path: Path) -> None:
    """Rows written before schema v11 were never read for their series: the next embed fills them, once."""
    import sqlite3

    import pydicom
    from pydicom.data import get_testdata_file

    import embedlab

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    folder = tmp_path / "series"
    folder.mkdir()
    _series_file(source, folder / "slice_a.dcm", -75.7, 2, 1)
    _series_file(source, folder / "slice_b.dcm", -74.7, 2, 3)
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(folder / "flat.png")  # not DICOM: never marked
    embedlab.embed(folder, tmp_path / "index")
    conn = sqlite3.connect(tmp_path / "index" / "embedlab.db")
    with conn:  # what an embedlab before v11 left: no keys, schema 11 (the columns came empty)
        conn.execute("UPDATE images SET series_key = NULL, slice_key = NULL")
        conn.execute("PRAGMA user_version = 11")
    conn.close()
    with Store(tmp_path / "index") as store:  # migration 012 marks the DICOM rows as unknown
        assert store.series_slices() == {}
        marked = store.shas_without_series()
        assert len(marked) == 2
    again = embedlab.embed(folder, tmp_path / "index").last_embed
    assert again is not None and again.report.new == 2 and again.report.unchanged == 1
    with Store(tmp_path / "index") as store:
        assert store.shas_without_series() == set()
        assert {Path(p).name: key for p, (_, key) in store.series_slices().items()} == {
            "slice_a.dcm": "p:-75.70",
            "slice_b.dcm": "p:-74.70",
        }
    third = embedlab.embed(folder, tmp_path / "index").last_embed
    assert third is not None and third.report.new == 0 and third.report.unchanged == 3


def test_copies_first_finds_the_source_of_a_quarter_turned_copy_beyond_the_query_s_nearest(
    edited_index: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from embedlab import ranking

    index, _ = edited_index
    queries = tmp_path / "turned"
    queries.mkdir()
    _photo("camera.png").resize((256, 192)).transpose(Image.Transpose.ROTATE_90).save(queries / "camera_turned.png")
    # A pool of one: the verifier sees only the query's nearest as it is, plus the turned vectors' nearest.
    monkeypatch.setattr(ranking, "COPY_POOL", 1)
    argv = ["search", "--index", str(index), "--query-dir", str(queries), "--k", "3", "--json"]
    plain = json.loads(_cli_json(argv))["results"]
    assert Path(plain[0]["path"]).name != "camera.png"  # the vectors are not rotation-invariant
    first = json.loads(_cli_json([*argv, "--copies-first"]))["results"][0]
    assert Path(first["path"]).name == "camera.png" and first["copy"] >= 0.92


def test_a_turned_noisy_copy_of_a_tiny_picture_is_grouped_though_its_vectors_are_far_apart(tmp_path: Path) -> None:
    import embedlab

    folder = tmp_path / "tiny"
    folder.mkdir()
    names = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "brick.png", "retina.jpg")
    for name in names:
        _photo(name).resize((28, 28), Image.Resampling.BOX).save(folder / f"{Path(name).stem}.png")
    coffee = np.asarray(_photo("coffee.png").resize((28, 28), Image.Resampling.BOX).rotate(90), dtype=np.float64)
    noisy = coffee + np.random.default_rng(0).normal(0.0, 12.0, coffee.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / "coffee_turned_noisy.png")
    index = embedlab.embed(folder, tmp_path / "index")
    result = index.analyze(dup_threshold=0.92, anomaly_top=1)
    groups = [sorted(Path(p).name for p in g) for g in result.to_dict()["duplicate_groups"]]
    assert groups == [["coffee.png", "coffee_turned_noisy.png"]]
    from embedlab.analysis import evidence_loader, small_candidates

    with Store(tmp_path / "index") as store:
        assert len(store.small_contents(64)) == len(names) + 1 and not store.small_contents(28)
        sha_of = {Path(p).name: sha for sha, paths in store.ok_paths_by_sha().items() for p in paths}
        shas, matrix = store.load_vectors(through_vec=False)
        # Proposed by the thumbnails alone, as each other's nearest: the vectors need not find the pair.
        proposed = small_candidates(matrix, range(len(shas)), evidence_loader(store, shas))
    a, b = sorted(shas.index(sha_of[n]) for n in ("coffee.png", "coffee_turned_noisy.png"))
    assert [(i, j, rank) for i, j, _, rank in proposed if (i, j) == (a, b)] == [(a, b, 0)]


@pytest.mark.parametrize("name", ["rocket.jpg", "retina.jpg"])
def test_a_tiny_picture_cropped_and_enlarged_back_is_found_as_a_zoomed_inset(name: str) -> None:
    from embedlab.duplicates import LARGE_BUDGET, FitBudget

    tiny = _photo(name).resize((28, 28), Image.Resampling.BOX)
    zoomed = tiny.crop((5, 6, 22, 23)).resize((28, 28), Image.Resampling.BICUBIC)  # 18-21 % cut per side
    pair = [ev.compute(tiny), ev.compute(zoomed)]
    link = Verifier(pair, budget=FitBudget()).link(0, 1, 0.7)
    assert link.score >= 0.92 and link.kind == "edited_copy", link
    # Without it, the few corners of 28 px leave the keypoint fit short of the default threshold;
    # large collections skip the zoomed search (8 to 17 template matches a pair of small pictures).
    for budget in (FitBudget(zoom_small=False), LARGE_BUDGET):
        assert Verifier(pair, budget=budget).link(0, 1, 0.7).score < 0.92, budget
    # Other small pictures, cropped or whole, are not a zoomed copy of it.
    for other_name in ("coffee.png", "astronaut.png", "camera.png", "chelsea.png"):
        other = _photo(other_name).resize((28, 28), Image.Resampling.BOX)
        for picture in (other, other.crop((5, 6, 22, 23)).resize((28, 28), Image.Resampling.BICUBIC)):
            assert Verifier([pair[0], ev.compute(picture)]).link(0, 1, 0.7).score < 0.5, other_name


def _pasted(picture: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    """The picture pasted into a gradient canvas of ``size`` with a red dot in a corner."""
    ramp = np.linspace(60, 200, size[1])[:, None, None].repeat(size[0], 1).repeat(3, 2)
    canvas = Image.fromarray(ramp.astype(np.uint8))
    ImageDraw.Draw(canvas).ellipse((2, 2, 9, 9), fill=(200, 40, 40))
    canvas.paste(picture, at)
    return canvas


@pytest.mark.parametrize("size, at", [((49, 56), (13, 17)), ((45, 40), (7, 9)), ((60, 52), (21, 4))])
def test_a_tiny_picture_pasted_into_a_small_canvas_is_matched_on_its_own_pixel_grid(
    size: tuple[int, int], at: tuple[int, int]
) -> None:
    from embedlab import verify

    for name in ("astronaut.png", "chelsea.png"):
        tiny = _photo(name).resize((25, 25), Image.Resampling.BOX)
        pair = [ev.compute(tiny), ev.compute(_pasted(tiny, size, at))]
        # In the canvas's thumbnail its footprint is off the grid by a fraction of a pixel.
        native, thumbnail = verify._native_inset(*pair), verify._pasted_inset(*pair)
        assert native >= 0.97 and native > thumbnail + 0.02, (name, native, thumbnail)
        assert Verifier(pair).link(0, 1, 0.6).score >= 0.92
        other = _photo("coffee.png").resize((25, 25), Image.Resampling.BOX)
        assert Verifier([pair[0], ev.compute(_pasted(other, size, at))]).link(0, 1, 0.6).score < 0.5


def _on_canvas(
    picture: Image.Image, at: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...], seed: int
) -> Image.Image:
    """The picture on a 400 x 300 gradient canvas with a few coloured discs around it."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, 300)[:, None, None]
    grad = (np.array(top) * (1 - ramp) + np.array(bottom) * ramp).repeat(400, 1)
    out = Image.fromarray(grad.round().astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(4):
        x, y, r = (int(v) for v in (rng.integers(0, 400), rng.integers(0, 300), rng.integers(8, 30)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    out.paste(picture, at)
    return out


@pytest.mark.parametrize("name", ["coffee.png", "astronaut.png", "camera.png"])
def test_one_picture_on_two_different_canvases_agrees_where_the_keypoints_fit(name: str) -> None:
    picture = _photo(name).resize((240, 180))
    first = _on_canvas(picture, (20, 30), (200, 60, 60), (40, 40, 160), 1)
    second = _on_canvas(picture, (140, 100), (30, 200, 90), (230, 230, 40), 2)
    verifier = Verifier([ev.compute(first), ev.compute(second)])
    m = verifier.pair(0, 1, 0.7)
    # The canvases disagree around the picture; within the box of the inliers the two agree.
    assert m.inliers > 0 and m.core >= 0.95 and m.core > m.warped + 0.15, m
    assert verifier.link(0, 1, 0.7).score >= 0.92
