"""`report`: the HTML page, checked as parsed HTML and as rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from embedlab.cli import main

# Names that would run code if a page pasted them in unescaped.
HOSTILE = ("<script>.png", "<img src=x onerror=document.title='pwned'>.png")
TITLE = "embedlab report"


@dataclass
class Dom:
    """What a page holds, as counted by a plain HTML parser."""

    tags: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    attributes: set[str] = field(default_factory=set)
    img_srcs: list[str] = field(default_factory=list)
    hrefs: list[str] = field(default_factory=list)
    # section id -> number of <img class="thumb"> inside it; article class -> count
    thumbs_in: Counter[str] = field(default_factory=Counter)
    captions: list[str] = field(default_factory=list)
    title: str = ""
    csp: str = ""


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self.section = ""
        self.in_title = self.in_path = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.dom.tags[tag] += 1
        self.dom.attributes.update(a)
        for cls in a.get("class", "").split():
            self.dom.classes[f"{tag}.{cls}"] += 1
        if tag == "section":
            self.section = a.get("id", "")
        if "href" in a:
            self.dom.hrefs.append(a["href"])
        if tag == "img":
            self.dom.img_srcs.append(a.get("src", ""))
            if "thumb" in a.get("class", "").split():
                self.dom.thumbs_in[self.section] += 1
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.dom.csp = a.get("content", "")
        self.in_title = tag == "title"
        self.in_path = tag == "span" and a.get("class") == "path"

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.dom.title += data
        if self.in_path:
            self.dom.captions.append(data)

    def handle_endtag(self, tag: str) -> None:
        self.in_title = self.in_path = False


def parse(text: str) -> Dom:
    parser = _Parser()
    parser.feed(text)
    return parser.dom


@pytest.fixture(scope="module")
def report_case(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> dict[str, Any]:
    """A real index with duplicates, hostile names, a blank image and a broken file; its report."""
    base = tmp_path_factory.mktemp("report")
    images, queries = base / "images", base / "queries"
    images.mkdir()
    queries.mkdir()
    for name in ("chelsea.png", "chelsea_half.jpg", "coffee.png", "sub_coffee_copy.png", "moon.png", "coins.png"):
        shutil.copyfile(photo_dir / name, images / name)
    shutil.copyfile(photo_dir / "horse.png", images / HOSTILE[0])
    shutil.copyfile(photo_dir / "horse.png", images / HOSTILE[1])
    shutil.copyfile(photo_dir / "brick.png", images / "brick.png")
    Image.new("RGB", (64, 64), (255, 255, 255)).save(images / "blank.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shutil.copyfile(photo_dir / "chelsea_half.jpg", queries / "q_cat.jpg")
    shutil.copyfile(photo_dir / "coins.png", queries / "q_coins.png")
    index, out = base / "index", base / "index" / "report.html"
    assert main(["-q", "embed", "--images-dir", str(images), "--out", str(index)]) == 0
    return {"base": base, "images": images, "queries": queries, "index": index, "out": out}


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["-q", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _expected(case: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """What the page must show, from the analyze and search commands themselves."""
    index = str(case["index"])
    analysis = _cli_json(capsys, "analyze", "--index", index, "--anomaly-top", "4", "--json")
    assert main(["-q", "search", "--index", index, "--query-dir", str(case["queries"]), "--k", "3", "--json"]) == 0
    searches = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {
        "groups": analysis["duplicate_groups"],
        "anomalies": analysis["anomaly_details"],
        "unreadable": analysis["unreadable"],
        "searches": searches,
        "thumbs": {
            "duplicates": sum(len(g) for g in analysis["duplicate_groups"]),
            "anomalies": sum(1 + min(5, len(a["neighbours"])) for a in analysis["anomaly_details"]),
            "search": sum(1 + len(s["results"]) for s in searches),
        },
    }


@pytest.fixture(scope="module")
def written(report_case: dict[str, Any]) -> dict[str, Any]:
    args = ["-q", "report", "--index", str(report_case["index"]), "--out", str(report_case["out"])]
    args += ["--query-dir", str(report_case["queries"]), "--k", "3", "--anomaly-top", "4"]
    metrics = report_case["base"] / "metrics.json"
    assert main([*args, "--metrics-out", str(metrics)]) == 0
    return {**report_case, "metrics": json.loads(metrics.read_text())}


def test_page_shows_what_analyze_and_search_find(written: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected(written, capsys)
    dom = parse(written["out"].read_text(encoding="utf-8"))
    assert dom.classes["article.group"] == len(expected["groups"]) >= 3
    assert dom.classes["article.anomaly"] == len(expected["anomalies"]) == 4
    assert dom.classes["article.query"] == len(expected["searches"]) == 2
    assert dict(dom.thumbs_in) == expected["thumbs"]
    assert dom.classes["div.missing"] == 0  # every shown picture decoded
    # The byte-identical pair of hostile names is one group, shown under its real names.
    assert sorted(str(written["images"] / n) for n in HOSTILE) in expected["groups"]
    assert {str(written["images"] / n) for n in HOSTILE} <= set(dom.captions)
    assert [str(written["images"] / "broken.png")] == [u["path"] for u in expected["unreadable"]]
    assert dom.classes["table.unreadable"] == 1
    # Self-contained and inert: pictures inline, no script, nothing fetched.
    assert dom.img_srcs and all(src.startswith("data:image/jpeg;base64,") for src in dom.img_srcs)
    assert dom.tags["script"] == 0 and "onerror" not in dom.attributes
    assert dom.hrefs and all(h.startswith("#") for h in dom.hrefs)
    assert "default-src 'none'" in dom.csp and dom.title == TITLE
    metrics = written["metrics"]
    assert metrics["command"] == "report" and metrics["groups"] == len(expected["groups"])
    assert metrics["thumbnails"] == sum(expected["thumbs"].values()) and metrics["run_id"] >= 1


def test_page_is_deterministic(written: dict[str, Any], tmp_path: Path) -> None:
    again = tmp_path / "again.html"
    args = ["-q", "report", "--index", str(written["index"]), "--out", str(again)]
    args += ["--query-dir", str(written["queries"]), "--k", "3", "--anomaly-top", "4"]
    assert main(args) == 0
    # Only the manifest (which lists the runs, this one's predecessor included) may differ.
    first = written["out"].read_text(encoding="utf-8").split('<section id="manifest">')[0]
    assert again.read_text(encoding="utf-8").split('<section id="manifest">')[0] == first


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on this machine and none could be installed (.ci/run installs Debian's chromium)")


def _browser(page: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *flags,
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )


def test_chromium_renders_groups_and_thumbnails(
    written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _expected(written, capsys)
    rendered = _browser(written["out"], "--dump-dom")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = parse(rendered.stdout)
    assert dom.classes["article.group"] == len(expected["groups"])
    assert dict(dom.thumbs_in) == expected["thumbs"]
    # The hostile names stayed text: no element was injected and the handler never ran.
    assert dom.title == TITLE and "onerror" not in dom.attributes and dom.tags["script"] == 0
    assert {str(written["images"] / n) for n in HOSTILE} <= set(dom.captions)

    shot = tmp_path / "report.png"
    taken = _browser(written["out"], f"--screenshot={shot}", "--window-size=1280,1600")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    # A real page: dark header band on top, pictures below (not a blank or error page).
    assert grey[:40].mean() < 80 and grey[200:].std() > 30


def test_report_errors_name_the_fix(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--index", "./nowhere", "--out", "r.html"]) == 1
    err = capsys.readouterr().err
    assert "no index at nowhere: run `embedlab embed --images-dir IMAGES --out nowhere` first" in err
    (work / "folder").mkdir()
    Image.new("RGB", (40, 40), (0, 90, 200)).save(work / "folder" / "a.png")
    assert main(["-q", "embed", "--images-dir", "folder", "--out", "idx"]) == 0
    assert main(["report", "--index", "idx", "--out", "idx"]) == 1
    assert "is a folder: name the HTML file" in capsys.readouterr().err
    (work / "empty").mkdir()
    assert main(["report", "--index", "idx", "--out", "r.html", "--query-dir", "empty"]) == 1
    assert "no images found in empty" in capsys.readouterr().err
    assert not (work / "r.html").exists()
    # A file gone since embed: its box says so, the page is still written.
    (work / "folder" / "a.png").unlink()
    assert main(["report", "--index", "idx", "--out", "r.html"]) == 0
    assert "1 pictures could not be read for thumbnails" in capsys.readouterr().err
    page = (work / "r.html").read_text(encoding="utf-8")
    dom = parse(page)
    assert dom.classes["div.missing"] == 1 and dom.tags["img"] == 0 and ">file not found</div>" in page
