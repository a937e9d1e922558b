import pytest

from trajloom.encoding import latent_frames


@pytest.mark.parametrize("t, expected", [(81, 21), (1, 1), (17, 5), (5, 2)])
def test_latent_frames(t, expected):
    assert latent_frames(t) == expected


def test_latent_frames_refuses_incompatible_lengths():
    with pytest.raises(ValueError, match="num_frames=80 is not 1 \\+ a multiple"):
        latent_frames(80)
