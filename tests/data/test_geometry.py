"""Source <-> working pixels: one exact pair for every fit, and frames placed to match it."""

import numpy as np
import pytest

from trajloom.data.geometry import (
    DEFAULT_FIT,
    FIT_MODES,
    Fit,
    SourceView,
    capped_size,
    fit_frames,
    to_source,
    to_working,
)

SIZES = [((768, 576), (128, 128)), ((1280, 720), (832, 480)), ((338, 640), (128, 64))]


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize(("source", "working"), SIZES)
def test_round_trip_is_exact_both_ways(mode, source, working):
    fit = Fit(source, working, mode)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 1000, (200, 2))
    np.testing.assert_allclose(to_source(to_working(pts, fit), fit), pts, rtol=0, atol=1e-9)
    np.testing.assert_allclose(to_working(to_source(pts, fit), fit), pts, rtol=0, atol=1e-9)
    nan = to_working(np.array([np.nan, 3.0]), fit)
    assert np.isnan(nan[0]) and np.isfinite(nan[1])


def test_the_default_keeps_the_aspect_of_motion_and_the_whole_video():
    fit = Fit((768, 576), (128, 128))
    assert fit.mode == DEFAULT_FIT == "pad"
    assert fit.resized == (128, 96) and tuple(fit.offset) == (0, 16)
    sx, sy = fit.scale
    assert sx == sy  # a step right and a step down scale alike
    # the corners of the video land inside the working frame: nothing is cut
    corners = to_working(np.array([[-0.5, -0.5], [767.5, 575.5]]), fit)
    np.testing.assert_allclose(corners, [[-0.5, 15.5], [127.5, 111.5]], atol=1e-9)


def test_crop_and_stretch():
    crop = Fit((768, 576), (128, 128), "crop")
    assert crop.resized == (171, 128) and tuple(crop.offset) == (-22, 0)  # 43 cut: 22 + 21
    assert crop.scale[1] == 128 / 576
    stretch = Fit((768, 576), (128, 128), "stretch")
    np.testing.assert_allclose(stretch.scale, [128 / 768, 128 / 576])
    assert tuple(stretch.offset) == (0, 0)
    # stretch distorts motion: one step of 6 px right and 6 px down become unequal
    step = to_working(np.array([6.0, 6.0]), stretch) - to_working(np.zeros(2), stretch)
    assert step[0] != pytest.approx(step[1])


@pytest.mark.parametrize("mode", FIT_MODES)
def test_fit_frames_put_a_source_pixel_where_to_working_says(mode):
    source, working = (300, 180), (64, 64)
    fit = Fit(source, working, mode)
    frames = np.zeros((1, 180, 300, 3), np.uint8)
    centre = np.array([150.0 + 20.5, 90.0 - 10.5])  # between pixels: a 40 x 40 square
    x0, y0 = int(centre[0] - 19.5), int(centre[1] - 19.5)
    frames[0, y0 : y0 + 40, x0 : x0 + 40] = 255
    placed = fit_frames(frames, fit)
    assert placed.shape == (1, 64, 64, 3)
    weight = placed[0, ..., 0].astype(np.float64)
    ys, xs = np.indices(weight.shape)
    found = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
    np.testing.assert_allclose(found, to_working(centre, fit), atol=0.05)
    if mode == "pad":  # the bars are black
        assert placed[0, :4].max() == 0 and placed[0, -4:].max() == 0


def test_capped_size_and_the_view_map():
    assert capped_size((768, 576), None) == (768, 576)
    assert capped_size((768, 576), 1280) == (768, 576)  # never enlarged
    assert capped_size((1920, 1080), 1280) == (1280, 720)
    assert capped_size((576, 768), 384) == (288, 384)
    fit = Fit((1920, 1080), (832, 480))
    view = SourceView(np.zeros((2, 720, 1280, 3), np.uint8), fit)
    pts = np.array([[10.0, 20.0], [400.0, 300.0]])
    src = to_source(pts, fit)
    np.testing.assert_allclose(view.to_render(pts), (src + 0.5) * (1280 / 1920) - 0.5)


def test_bad_fits_say_what_is_wrong():
    with pytest.raises(ValueError, match="fit must be one of pad, crop, stretch"):
        Fit((10, 10), (10, 10), "squash")
    with pytest.raises(ValueError, match="source must be whole"):
        Fit((0, 10), (10, 10))
    with pytest.raises(ValueError, match="fit_frames: frames are 10x10"):
        fit_frames(np.zeros((1, 10, 10, 3), np.uint8), Fit((20, 10), (10, 10)))
    with pytest.raises(ValueError, match="cap must be >= 2"):
        capped_size((100, 50), 1)
