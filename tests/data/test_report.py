"""trajloom.data.report: the static HTML report's content and its refusals."""

from __future__ import annotations

import re

import pytest

from trajloom.data.report import REPORT_NAME, ClipView, Table, write_report


def _media(folder, *names):
    paths = []
    for name in names:
        path = folder / "renders" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a video")
        paths.append(path)
    return paths


def test_report_references_media_relatively_and_nothing_remote(tmp_path):
    s0, s1, truth = _media(tmp_path, "a b.mp4", "a_sample_001.mp4", "a_truth.mp4")
    view = ClipView(
        "a<b",
        [s0, s1],
        truth=truth,
        sample_metrics=[{"ADE": 1.5}, {"ADE": float("nan")}],
        metrics={"minADE": 1.5},
    )
    table = Table("t", ["name", "value"], [["x", 2.0], ["y", None]])
    path = write_report(tmp_path, "title & more", clips=[view], tables=[table])
    assert path == tmp_path / REPORT_NAME
    page = path.read_text()
    sources = re.findall(r'<video src="([^"]+)"', page)
    assert sources == ["renders/a b.mp4", "renders/a_sample_001.mp4", "renders/a_truth.mp4"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "a&lt;b" in page and "title &amp; more" in page  # escaped, not markup
    # one switch button per view plus "show all"; one metrics row per sample
    assert re.findall(r'data-view="(\w+)">', page)[:4] == [
        "sample_000",
        "sample_001",
        "truth",
        "all",
    ]
    assert page.count('<tr data-view="sample_') == 2
    assert '<td data-value=""></td>' in page  # NaN and None show as empty cells


def test_report_refuses_missing_or_outside_media(tmp_path):
    (inside,) = _media(tmp_path / "report", "a.mp4")
    with pytest.raises(FileNotFoundError, match=r"clip 'a'.*missing\.mp4"):
        write_report(tmp_path / "report", "t", clips=[ClipView("a", [tmp_path / "missing.mp4"])])
    (outside,) = _media(tmp_path / "elsewhere", "b.mp4")
    with pytest.raises(ValueError, match="outside the report folder"):
        write_report(tmp_path / "report", "t", clips=[ClipView("b", [inside, outside])])
    assert not (tmp_path / "report" / REPORT_NAME).exists()


def test_views_and_tables_check_their_shapes(tmp_path):
    with pytest.raises(ValueError, match="no sample video"):
        ClipView("a", [])
    with pytest.raises(ValueError, match="1 rows of sample metrics for 2 samples"):
        ClipView("a", [tmp_path / "x", tmp_path / "y"], sample_metrics=[{"ADE": 1.0}])
    with pytest.raises(ValueError, match=r"rows \[1\] do not have 2 cells"):
        Table("t", ["a", "b"], [[1, 2], [3]])
