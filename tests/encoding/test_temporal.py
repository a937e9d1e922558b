import pytest

from trajloom.encoding import latent_frames


@pytest.mark.parametrize("t, expected", [(81, 21), (1, 1), (17, 5), (5, 2)])
def test_latent_frames(t, expected):
    assert latent_frames(t) == expected


def test_latent_frames_refuses_incompatible_lengths():
    with pytest.raises(ValueError, match="num_frames=80 is not 1 \\+ a multiple"):
        latent_frames(80)


def test_default_geometry_is_the_paper_geometry():
    from trajloom.encoding import (
        DEFAULT_FUTURE,
        DEFAULT_GRID,
        DEFAULT_HISTORY,
        DEFAULT_TEMPORAL_FACTOR,
        DEFAULT_WINDOWS,
    )

    assert (DEFAULT_GRID.width, DEFAULT_GRID.height, DEFAULT_GRID.stride) == (832, 480, 32)
    assert DEFAULT_GRID.num_points == 390
    assert (DEFAULT_HISTORY, DEFAULT_FUTURE, DEFAULT_TEMPORAL_FACTOR) == (81, 81, 4)
    assert DEFAULT_WINDOWS.history_latent_frames == DEFAULT_WINDOWS.future_latent_frames == 21
    assert DEFAULT_WINDOWS.total == 162


def test_window_spec_refuses_lengths_that_do_not_compress():
    from trajloom.encoding import WindowSpec

    assert WindowSpec(history=17, future=9).future_latent_frames == 3
    with pytest.raises(ValueError, match=r"WindowSpec.future: num_frames=10"):
        WindowSpec(history=17, future=10)
    with pytest.raises(ValueError, match=r"WindowSpec.temporal_factor must be a positive int"):
        WindowSpec(temporal_factor=0)
