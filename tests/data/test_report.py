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


def test_error_plot_and_motion_summary_thumbnail(tmp_path):
    s0, s1, together, still = _media(
        tmp_path, "c.mp4", "c_sample_001.mp4", "c_together.mp4", "c_summary.png"
    )
    curves = {
        "sample 0": [1.0, 2.0, 4.0],
        "sample 1": [1.0, None, 3.0],  # a frame without visible points: a gap
        "constant velocity": [0.5, 1.0, 8.0],
    }
    view = ClipView("c", [s0, s1], together=together, curves=curves, thumbnail=still)
    table = Table("clips", ["clip", "minADE"], [["c", 1.0]], thumbnails=[still])
    page = write_report(tmp_path, "t", clips=[view], tables=[table]).read_text()
    svg = re.search(r'<svg class="errplot".*?</svg>', page, re.S).group(0)
    lines = re.findall(r'<polyline class="(\w+)" data-label="([^"]+)"[^>]*points="([^"]+)"', svg)
    kinds = [(k, label) for k, label, _ in lines]
    assert kinds == [
        ("sample", "sample 0"),
        ("sample", "sample 1"),
        ("sample", "sample 1"),  # two runs around the gap
        ("baseline", "constant velocity"),
    ]
    # y grows downwards: the largest error (8 px) sits on the top of the axis (a 10 px
    # scale), the smallest lowest; x runs over the three future frames
    pts = {i: [tuple(map(float, p.split(","))) for p in lines[i][2].split()] for i in (0, 3)}
    xs = [x for x, _ in pts[3]]
    assert xs == sorted(xs) and len(set(xs)) == 3
    heights = [y for _, y in pts[3]]
    assert heights[2] < heights[1] < heights[0]
    assert pts[0][2][1] == pytest.approx(heights[2] + (heights[0] - heights[2]) * 4 / 7.5, abs=0.2)
    assert "future frame" in svg and "error (px)" in svg
    # the motion summary: in the clip and, as a thumbnail linking to it, in the table
    assert '<img class="summary" src="renders/c_summary.png"' in page
    assert '<a href="#clip-c"><img class="thumb" src="renders/c_summary.png"' in page
    assert 'data-view="together"' in page
    with pytest.raises(ValueError, match="1 thumbnails for 2 rows"):
        Table("clips", ["clip"], [["a"], ["b"]], thumbnails=[still])
