"""Dedupe planning, marks, leak counting and export rendering as pure functions (no model, no index)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlab.dedupe import (
    DEFAULT_FORMATS,
    RULES,
    Member,
    dicom_original,
    is_protected,
    layout_path,
    parse_rules,
    plan_groups,
)
from embedlab.duplicates import Link
from embedlab.errors import UsageError
from embedlab.export import COLUMNS, render
from embedlab.leaks import find_leaks, parse_splits, split_of
from embedlab.marks import without_marked


def _member(path: str, **kw: object) -> Member:
    facts: dict[str, object] = {"sha256": path, "size": 100, "mtime_ns": 1000, "width": 10, "height": 10}
    facts.update(kw)
    return Member(path, **facts)  # type: ignore[arg-type]


# Each rule alone picks a different member of this group.
GROUP = [
    _member("a/longest/name/big.png", width=400, height=300, size=10, mtime_ns=3000, format="PNG"),
    _member("a/b/heavy.jpg", size=9000, mtime_ns=2000, format="JPEG"),
    _member("a/old.gif", size=20, mtime_ns=1, format="GIF"),
    _member("a/new.jpg", size=30, mtime_ns=9999, format="JPEG"),
    _member("s.bmp", size=40, mtime_ns=5000, format="BMP"),
    _member("a/x/scan.dcm", size=50, mtime_ns=4000, format="DICOM", original=True),
]


@pytest.mark.parametrize(
    ("rule", "keeper"),
    [
        ("highest-resolution", "a/longest/name/big.png"),
        ("largest-file", "a/b/heavy.jpg"),
        ("oldest", "a/old.gif"),
        ("newest", "a/new.jpg"),
        ("shortest-path", "s.bmp"),
        ("format-priority", "a/x/scan.dcm"),
        ("original", "a/x/scan.dcm"),
    ],
)
def test_every_keep_rule_chooses_its_keeper(rule: str, keeper: str) -> None:
    (plan,) = plan_groups([GROUP], [rule], DEFAULT_FORMATS)
    assert plan.keeper == keeper and plan.reason == rule
    assert [f.decision for f in plan.files].count("keep") == 1
    assert {f.path for f in plan.removals} == {m.path for m in GROUP} - {keeper}


def test_rules_apply_in_order_and_format_priority_takes_a_list() -> None:
    (plan,) = plan_groups([GROUP], ["format-priority", "largest-file"], ["jpeg", "png"])
    assert plan.keeper == "a/b/heavy.jpg" and plan.reason == "largest-file"  # two JPEGs: size decides
    (plan,) = plan_groups([GROUP[:2]], ["original", "largest-file"])  # original cannot tell: the next rule decides
    assert plan.keeper == "a/b/heavy.jpg" and plan.reason == "largest-file"
    derived = [_member("d.dcm", original=False, size=10**6), _member("o.dcm", original=True)]
    assert plan_groups([derived], ["original", "largest-file"])[0].keeper == "o.dcm"


def test_unknown_rules_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="unknown rule 'biggest'"):
        parse_rules("largest-file,biggest")
    assert parse_rules("oldest, shortest-path") == ("oldest", "shortest-path")


def test_protected_members_are_kept_and_the_keeper_is_still_the_best() -> None:
    group = [_member("ref/a.png", protected=True, size=1), _member("b.png", size=5), _member("c.png", size=2)]
    (plan,) = plan_groups([group], ["largest-file"])
    assert plan.keeper == "b.png"
    assert {f.path: f.decision for f in plan.files} == {"b.png": "keep", "ref/a.png": "protected", "c.png": "remove"}


members = st.builds(
    Member,
    path=st.text("abc/", min_size=1, max_size=6),
    sha256=st.sampled_from(["s1", "s2", "s3"]),
    size=st.integers(0, 5),
    mtime_ns=st.integers(0, 5),
    width=st.none() | st.integers(0, 4),
    height=st.none() | st.integers(0, 4),
    format=st.sampled_from([None, "PNG", "JPEG", "DICOM", "TIFF"]),
    original=st.sampled_from([None, True, False]),
    protected=st.booleans(),
)
groups = st.lists(st.lists(members, min_size=0, max_size=6, unique_by=lambda m: m.path), max_size=6)


@settings(max_examples=300, deadline=None)
@given(groups=groups, rules=st.permutations(RULES).flatmap(lambda r: st.integers(1, len(r)).map(lambda n: r[:n])))
def test_no_plan_removes_every_copy_or_anything_protected(groups: list[list[Member]], rules: list[str]) -> None:
    plans = plan_groups(groups, rules)
    assert len(plans) == sum(len(g) >= 2 for g in groups)
    by_number = {p.group: p for p in plans}
    for number, group in enumerate(groups, 1):
        if len(group) < 2:
            continue
        plan = by_number[number]
        fate = {f.path: f.decision for f in plan.files}
        assert set(fate) == {m.path for m in group}  # every member has a fate, none invented
        assert list(fate.values()).count("keep") == 1 and fate[plan.keeper] == "keep"
        assert any(d != "remove" for d in fate.values())  # the picture always keeps a copy
        for m in group:
            if m.protected:
                assert fate[m.path] != "remove"
        # Byte-identical members: a content is never removed while its group's keeper holds other bytes only
        # because the keeper is one of the group's contents; at least one content of the group survives.
        assert {m.sha256 for m in group if fate[m.path] != "remove"}


def test_protected_folders_compare_whole_path_components(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    assert is_protected(str(tmp_path / "ref" / "x.png"), [str(tmp_path / "ref")])
    assert not is_protected(str(tmp_path / "reference" / "x.png"), [str(tmp_path / "ref")])


def test_layout_under_dest_keeps_the_indexed_path(tmp_path: Path) -> None:
    assert layout_path(tmp_path, "photos/sub/a.png") == tmp_path / "photos" / "sub" / "a.png"
    assert layout_path(tmp_path, "/abs/a.png") == tmp_path / "abs" / "a.png"
    assert layout_path(tmp_path, "../up/a.png") == tmp_path / "_parent_" / "up" / "a.png"


def test_dicom_image_type_original_or_derived(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.save_as(tmp_path / "derived.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.save_as(tmp_path / "original.dcm")
    assert dicom_original(str(tmp_path / "derived.dcm")) is False
    assert dicom_original(str(tmp_path / "original.dcm")) is True
    assert dicom_original(str(tmp_path / "missing.dcm")) is None


def _link(a: int, b: int, score: float) -> Link:
    return Link(a, b, score, "edited_copy", None, score)


def test_a_mark_splits_a_group_even_through_its_representative() -> None:
    from embedlab.duplicates import build_groups

    links = [_link(0, 1, 0.99), _link(0, 2, 0.97), _link(1, 2, 0.95)]
    single = [False, False, False]
    assert [g.members for g in build_groups(3, links, 0.9, single)] == [[0, 1, 2]]
    kept = without_marked(3, links, 0.9, single, {(1, 2)})  # 1 and 2 both hang on representative 0
    grouped = [g.members for g in build_groups(3, kept, 0.9, single)]
    assert grouped == [[0, 1]]
    assert without_marked(3, links, 0.9, single, set()) == links


def test_leak_counts_per_split_pair() -> None:
    folders = parse_splits(["train=d/train", "test=d/test", "val=d/val"])
    rows = [["d/train/a.png", "d/test/a_copy.png"], ["d/train/b.png"], ["d/val/b2.jpg"], ["d/test/c.png"], ["x/y.png"]]
    links = [_link(1, 2, 0.98), _link(1, 3, 0.5)]  # b ~ b2 across train/val; b-c below the threshold
    data = find_leaks(rows, ["s0", "s1", "s2", "s3", "s4"], links, folders, 0.92)
    assert data["counts"] == [
        {"splits": ["test", "train"], "pairs": 1, "images": 2},
        {"splits": ["train", "val"], "pairs": 1, "images": 2},
    ]
    assert data["unassigned"] == 1 and {s["name"]: s["images"] for s in data["splits"]} == {
        "train": 2,
        "test": 2,
        "val": 1,
    }
    assert split_of("d/train/deep/z.png", {"all": "d", "train": "d/train"}) == "train"  # the deepest folder
    keyed = find_leaks(rows, ["s0", "s1", "s2", "s3", "s4"], [], folders, 0.92, {"s1": "k" * 64, "s3": "k" * 64})
    assert keyed["patients"]["counts"] == [{"splits": ["test", "train"], "patients": 1}]
    with pytest.raises(UsageError):
        parse_splits(["train=d/train"])
    with pytest.raises(UsageError):
        parse_splits(["train", "test=d"])


def test_export_renders_the_documented_columns() -> None:
    record = {"rank": 1, "path": "a,b.png", "score": 0.5, "flags": ["blank", "tiny"], "reasons": []}
    text = render("anomalies", [record], "csv")
    header, line = text.splitlines()
    assert header.split(",") == list(COLUMNS["anomalies"])
    assert line.startswith('1,"a,b.png",0.5,,,,blank; tiny,,,')
    assert render("anomalies", [record], "jsonl").startswith('{"rank":1,"path":"a,b.png","score":0.5,')
