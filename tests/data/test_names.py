"""Names: the natural sort order every input listing uses, and canonical video ids."""

from trajloom.data.names import canonical_id, natural_key


def test_natural_key_orders_digit_runs_as_numbers_and_ignores_case():
    names = ["clip10.mp4", "clip9.mp4", "Clip2.mp4", "clip1.mp4", "b", "A"]
    assert sorted(names, key=natural_key) == [
        "A",
        "b",
        "clip1.mp4",
        "Clip2.mp4",
        "clip9.mp4",
        "clip10.mp4",
    ]
    assert sorted(["a/frame_2", "a/frame_10", "a/frame_02x"], key=natural_key) == [
        "a/frame_2",
        "a/frame_02x",
        "a/frame_10",
    ]


def test_canonical_id_is_the_stem():
    assert canonical_id(" videos/6764402.mp4 ") == "6764402"
    assert canonical_id("6764402") == "6764402"
