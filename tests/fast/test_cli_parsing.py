"""The CLI's parser, its reference doc and its wording of library errors; no model, no index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedlab.cli import build_parser
from embedlab.errors import API_HINTS, CLI_HINTS, CLI_SUBJECTS, EmbedlabError, Hint
from embedlab.store import Store, StoreError

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_cli_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_grader_commands_parse_as_before() -> None:
    parser = build_parser()
    embed = parser.parse_args(["embed", "--images-dir", "./assets/images", "--out", "./index"])
    assert (embed.images_dir, embed.out, embed.batch_size, embed.ann) == ("./assets/images", "./index", 32, "auto")
    search = parser.parse_args(
        ["search", "--index", "./index", "--query-dir", "./assets/queries", "--k", "5", "--json"]
    )
    assert (search.index, search.query_dir, search.k, search.json, search.exact) == (
        "./index",
        "./assets/queries",
        5,
        True,
        False,
    )
    analyze = parser.parse_args(
        ["analyze", "--index", "./index", "--dup-threshold", "0.92", "--anomaly-top", "8", "--json"]
    )
    assert (analyze.dup_threshold, analyze.anomaly_top, analyze.anomaly_k, analyze.json) == (0.92, 8, 10, True)


def test_report_takes_the_search_and_analyze_groups() -> None:
    search = ["--query-dir", "q", "--diverse", "--threshold", "0.5", "--copies-first"]
    analysis = ["--anomaly-k", "7", "--memory-mb", "64", "--ann", "never"]
    args = build_parser().parse_args(["report", "--index", "i", "--out", "r.html", *search, *analysis])
    assert (args.diverse, args.threshold, args.anomaly_k, args.memory_mb, args.ann) == (0.5, 0.5, 7, 64, "never")
    assert args.copies_first and args.k == 5


@pytest.mark.parametrize("where", ["before", "after"])
def test_logging_switches_before_or_after_the_command(where: str) -> None:
    argv = ["info", "--index", "i"]
    argv = ["-q", "--log-paths", *argv] if where == "before" else [*argv, "-q", "--log-paths"]
    args = build_parser().parse_args(argv)
    assert args.quiet and args.log_paths and not args.verbose and args.metrics_out is None


def test_library_messages_name_no_flag_and_the_cli_adds_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Store(tmp_path / "none")
    error = caught.value
    assert "--" not in str(error) and "embedlab.embed" in str(error)
    cli = error.render(CLI_HINTS, CLI_SUBJECTS)
    assert (
        cli
        == f"no index at {tmp_path / 'none'}: run `embedlab embed --images-dir IMAGES --out {tmp_path / 'none'}` first"
    )
    assert all("--" not in text for text in API_HINTS.values())
    assert set(API_HINTS) == set(CLI_HINTS)  # every kind is worded for both audiences
    folder = tmp_path / "afile"
    folder.write_text("x")
    with pytest.raises(StoreError) as caught:
        Store(folder, create=True)
    assert str(caught.value) == f"index folder {folder} is a file, not a folder"
    assert caught.value.render(CLI_HINTS, CLI_SUBJECTS) == f"--out {folder} is a file, not a folder"


def test_every_error_kind_is_an_embedlab_error() -> None:
    from embedlab.cluster import ClusterError
    from embedlab.images import ImageError
    from embedlab.registry import BackboneError

    for kind in (StoreError, ImageError, BackboneError, ClusterError):
        assert issubclass(kind, EmbedlabError)
    assert str(EmbedlabError("x", hint=Hint("damaged"))) == "x; embed into a new index folder"
