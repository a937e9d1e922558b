"""apps/demo click-to-pin, pure parts: click -> working pixel, the board's pins and picture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajloom.flow.pins import Pin, pins_from_json
from trajloom_demo.pinning import (
    PinBoard,
    click_to_pixel,
    display_scale,
    pixel_to_display,
)

SIZE = (128, 96)


def _gradio_index(u: float, v: float) -> tuple[int, int]:
    """What Gradio's frontend reports for a click at (u, v) displayed-image pixels from the
    image's top-left corner: each coordinate rounded with JavaScript's Math.round."""
    return math.floor(u + 0.5), math.floor(v + 0.5)


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def test_display_scale_is_the_smallest_integer_zoom_reaching_the_display_width():
    assert display_scale(128) == 4 and display_scale(832) == 1 and display_scale(300) == 2
    for width in (16, 100, 128, 511, 512, 832):
        s = display_scale(width)
        assert width * s >= 512 and (s == 1 or width * (s - 1) < 512)
    with pytest.raises(ValueError, match="width must be >= 1"):
        display_scale(0)


@pytest.mark.parametrize("scale", [1, 2, 4, 5])
def test_click_mapping_round_trips_every_displayed_pixel(scale):
    """Inside the image, pixel_to_display inverts click_to_pixel at every index Gradio can
    report (border clicks are moved onto the border pixel, tested below)."""
    width, height = SIZE
    for u in range(width * scale):
        x, _ = click_to_pixel((u, 0), scale, SIZE)
        if 0 < x < width - 1:
            assert pixel_to_display((x, 0.0), scale)[0] == pytest.approx(u, abs=1e-9)
    for v in range(height * scale):
        _, y = click_to_pixel((0, v), scale, SIZE)
        if 0 < y < height - 1:
            assert pixel_to_display((0.0, y), scale)[1] == pytest.approx(v, abs=1e-9)


@pytest.mark.parametrize("scale", [1, 2, 4, 5])
def test_a_click_anywhere_on_a_pixels_block_lands_on_that_pixel(scale):
    """Working pixel (i, j) is drawn over displayed [i*s, (i+1)*s) x [j*s, (j+1)*s); a click
    anywhere there maps within half a working pixel of its centre (Gradio rounds the click
    to whole displayed pixels: at most 0.5 / s more), and the centre of a block of even
    side maps exactly onto the pixel."""
    for i, j in ((0, 0), (17, 9), (SIZE[0] - 1, SIZE[1] - 1), (64, 48)):
        for fu in np.linspace(0, 1, 7, endpoint=False):
            for fv in np.linspace(0, 1, 7, endpoint=False):
                index = _gradio_index((i + fu) * scale, (j + fv) * scale)
                x, y = click_to_pixel(index, scale, SIZE)
                assert abs(x - i) <= 0.5 and abs(y - j) <= 0.5
        if scale % 2 == 0:
            centre = _gradio_index((i + 0.5) * scale, (j + 0.5) * scale)
            assert click_to_pixel(centre, scale, SIZE) == (i, j)


def test_clicks_stay_inside_the_image():
    assert click_to_pixel((0, 0), 4, SIZE) == (0.0, 0.0)  # would be -0.5: the border pixel
    assert click_to_pixel((512, 384), 4, SIZE) == (127.0, 95.0)
    assert click_to_pixel((9, 5), 1, SIZE) == (8.5, 4.5)


def test_the_displayed_frame_is_the_working_frame_enlarged():
    frame = _frame()
    board = PinBoard(frame, future=16)
    picture = board.picture()
    assert picture.shape == (96 * 4, 128 * 4, 3)
    for u, v in ((0, 0), (77, 301), (511, 383), (262, 130)):
        x, y = click_to_pixel(_gradio_index(u + 0.5, v + 0.5), 4, SIZE)
        assert (picture[v, u] == frame[round(y), round(x)]).all()
    assert PinBoard().picture() is None


def test_two_clicks_make_an_at_pin_that_the_library_reads():
    board = PinBoard(_frame(), future=16)
    board = board.click((202, 130), 5, "at")
    assert board.pending == (50.0, 32.0) and board.pins == ()
    assert "picked: now click its target" in board.note()
    board = board.click((262, 90), 5, "at")
    assert board.pending is None
    assert board.pins == ({"source": [50.0, 32.0], "frame": 5, "target": [65.0, 22.0]},)
    assert board.rows() == [[1, "(50, 32)", 5, "at", "(65, 22)"]]
    (pin,) = pins_from_json(list(board.pins))
    assert pin == Pin(frames=(5,), targets=((65.0, 22.0),), source=(50.0, 32.0))
    assert "1 pin(s)" in board.note()


def test_leave_the_image_takes_one_click_and_undo_and_clear():
    board = PinBoard(_frame(), future=16).click((202, 130), 3, "at")
    board = board.click((10, 10), 15, "outside")  # drops the picked point, adds the pin
    assert board.pending is None
    assert board.pins == ({"source": [2.0, 2.0], "frame": 15, "kind": "outside"},)
    assert board.rows()[0][3:] == ["outside", "(leaves the image)"]
    (pin,) = pins_from_json(list(board.pins))
    assert pin.kind == "outside" and pin.frames == (15,)
    board = board.click((40, 40), 0, "at").click((60, 60), 0, "at").click((80, 80), 1, "at")
    assert len(board.pins) == 2 and board.pending is not None
    board = board.undo()  # first the picked point
    assert len(board.pins) == 2 and board.pending is None
    board = board.undo()  # then the last pin
    assert board.pins[-1]["kind"] == "outside" and len(board.pins) == 1
    assert board.clear().pins == () and board.clear().frame is board.frame


def test_bad_clicks_are_refused_with_the_reason():
    board = PinBoard(_frame(), future=16)
    with pytest.raises(ValueError, match=r"pin frame 16 is outside the future window 0\.\.15"):
        board.click((10, 10), 16, "at")
    with pytest.raises(ValueError, match="pin kind must be one of"):
        board.click((10, 10), 0, "hidden")
    with pytest.raises(ValueError, match="no boundary frame: upload or pick a video"):
        PinBoard().click((10, 10), 0, "at")
    assert (
        "Baselines cannot follow pins"
        in PinBoard(
            _frame(), 16, steerable=False, pins=({"source": [1, 1], "frame": 0, "kind": "outside"},)
        ).note()
    )


def test_pins_are_drawn_where_they_are():
    frame = np.full((96, 128, 3), 40, np.uint8)
    board = PinBoard(frame, future=16).click((202, 130), 5, "at").click((402, 250), 5, "at")
    picture = board.picture()
    # the point's dot (yellow) at the source, the white ring around the target
    assert tuple(picture[130, 202]) == (255, 220, 0)
    assert (picture[250, 402 + 7] > 200).all() and (picture[250 - 7, 402] > 200).all()
    far = picture[360:, :100]
    assert (far == 40).all()  # untouched away from the pin


def test_clicks_on_the_source_frame_become_working_pixels_through_the_fit():
    """The board shows the video's own 256x192 frame; the model works on 128x128 (pad:
    the video is 128x96 there, 16 px bars above and below). A click names the working
    pixel to_working gives for the clicked source pixel, and the picture draws the pin
    back where it was clicked."""
    from trajloom.data.geometry import Fit, to_working

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)
    fit = Fit((256, 192), (128, 128))
    board = PinBoard(frame, future=9, fit=fit)
    assert board.size == (128, 128) and board.shown == (256, 192) and board.scale == 2
    clicks = [(101, 61), (301, 257)]  # displayed pixels (zoom 2)
    for index in clicks:
        board = board.click(index, 4, "at")
    (pin,) = board.pins
    for key, index in zip(("source", "target"), clicks, strict=True):
        shown = click_to_pixel(index, 2, (256, 192))
        want = to_working(np.asarray(shown), fit)
        assert pin[key] == pytest.approx(list(want), abs=0.005)
        back = board.to_shown(pin[key])
        assert back == pytest.approx(shown, abs=0.01)
    assert 16 <= pin["source"][1] <= 112  # on the video, not on a bar
    assert "256x192" in board.note() and "128x128 working" in board.note()
    picture = board.picture()
    assert picture.shape == (384, 512, 3)
    x, y = (round(v) for v in pixel_to_display(board.to_shown(pin["source"]), 2))
    assert tuple(picture[y, x]) == (255, 220, 0)  # the picked point's yellow dot
    # a shrunk frame (the render cap) maps the same source pixel to the same working one
    half = PinBoard(frame[::2, ::2], future=9, fit=fit)
    assert half.to_working((50.25, 30.25)) == pytest.approx(board.to_working((101.0, 61.0)))
