"""Names: the natural sort order every input listing uses, canonical video ids, and the
one rule for names from input (issue 25)."""

import pytest

from trajloom.data.names import (
    MAX_NAME,
    UniqueNames,
    UnsafeNameError,
    canonical_id,
    check_name,
    natural_key,
    safe_child,
    safe_stem,
)


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


# --------------------------------------------------------------------------- names from input

UNSAFE = ["", ".", "..", "../v", "../../../victim3", "/etc/passwd", "a/b", ".hidden", "a\\b",
          "a b", "a\nb", "é", "x" * (MAX_NAME + 1), None, 3]  # fmt: skip


@pytest.mark.parametrize("value", UNSAFE)
def test_check_name_refuses_paths_and_odd_characters_naming_the_kind(value):
    with pytest.raises(UnsafeNameError, match=r"^shard sample id .* is not a safe name"):
        check_name("shard sample id", value)


@pytest.mark.parametrize("value", ["clip", "clip-2", "a.b_c", "6764402", "x" * MAX_NAME, "-a"])
def test_check_name_keeps_safe_names(value):
    assert check_name("name", value) == value


def test_safe_child_stays_under_its_root_even_through_a_symlink(tmp_path):
    assert safe_child(tmp_path, "a", "b") == tmp_path / "a" / "b"
    (tmp_path / "out").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafeNameError, match="leads out of"):
        safe_child(tmp_path, "out", "x")
    with pytest.raises(UnsafeNameError):
        safe_child(tmp_path, "..")


def test_safe_stem_makes_any_file_stem_a_safe_name():
    assert safe_stem("my video (1)") == "my_video_1_"
    assert safe_stem("..") == "clip" and safe_stem("...x") == "x"
    assert check_name("stem", safe_stem("a/../../b" * 40)) == safe_stem("a/../../b" * 40)


def test_unique_names_are_distinct_and_stable():
    names = UniqueNames()
    got = [names.claim(n) for n in ["clip", "clip", "Clip", "clip-2", "x"]]
    assert got == ["clip", "clip-2", "Clip-3", "clip-2-2", "x"]
    again = UniqueNames()
    assert [again.claim(n) for n in ["clip", "clip", "Clip", "clip-2", "x"]] == got
