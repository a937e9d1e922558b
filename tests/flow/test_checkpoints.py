"""Finding trained sets and released files (``trajloom.flow.checkpoints``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trajloom.flow.checkpoints import (
    CheckpointSpecError,
    NoTrainedSetError,
    ReleasedFiles,
    find_released_files,
    find_trained_set,
    resolve_device,
)


def _trained_set(folder: Path, mtime: float | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text("{}")
    if mtime is not None:
        os.utime(folder / "pipeline.json", (mtime, mtime))
    return folder


def test_trained_set_folder_is_itself(tmp_path: Path) -> None:
    assert find_trained_set(_trained_set(tmp_path / "set")) == tmp_path / "set"


def test_run_folder_prefers_named_sets_then_newest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _trained_set(run / "stage1" / "ckpt", mtime=3_000)
    _trained_set(run / "trained", mtime=1_000)
    _trained_set(run / "a" / "b" / "final", mtime=2_000)
    assert find_trained_set(run) == run / "a" / "b" / "final"
    other = tmp_path / "other"
    _trained_set(other / "x", mtime=1_000)
    _trained_set(other / "y", mtime=2_000)
    assert find_trained_set(other) == other / "y"


def test_trained_set_deeper_than_three_levels_is_not_found(tmp_path: Path) -> None:
    _trained_set(tmp_path / "a" / "b" / "c" / "d")
    with pytest.raises(NoTrainedSetError, match="holds no trained set"):
        find_trained_set(tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: (p.mkdir(), (p / "model.safetensors").write_bytes(b"")), "single model"),
        (lambda p: (p.mkdir(), (p / "gen.pt").write_bytes(b"")), "released:"),
        (lambda p: p.mkdir(), "holds no trained set"),
    ],
)
def test_trained_set_errors_say_what_is_there(tmp_path: Path, make, message: str) -> None:
    target = tmp_path / "ckpt"
    make(target)
    with pytest.raises(NoTrainedSetError, match=message) as info:
        find_trained_set(target)
    assert isinstance(info.value, CheckpointSpecError)
    assert isinstance(info.value, ValueError)


def _released(root: Path, pts: list[str], vis_cfg: bool = True) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    names = ["trajloom_vae_config.json", "trajloom_generator_config.json", "vae_latent_stats.json"]
    for name in names + (["vis_predictor_config.json"] if vis_cfg else []):
        (root / "configs" / name).write_text("{}")
    for name in pts:
        (root / "checkpoints" / name).write_bytes(b"")
    return root


def test_released_files_told_apart_by_name(tmp_path: Path) -> None:
    root = _released(tmp_path, ["TrajLoom_VAE.pt", "generator.pt", "vis_head.pt"])
    files = find_released_files(root)
    assert files == ReleasedFiles(
        vae_ckpt=root / "checkpoints" / "TrajLoom_VAE.pt",
        vae_cfg=root / "configs" / "trajloom_vae_config.json",
        gen_ckpt=root / "checkpoints" / "generator.pt",
        gen_cfg=root / "configs" / "trajloom_generator_config.json",
        stats_json=root / "configs" / "vae_latent_stats.json",
        vis_ckpt=root / "checkpoints" / "vis_head.pt",
        vis_cfg=root / "configs" / "vis_predictor_config.json",
    )
    assert set(files.as_kwargs()) == {
        "vae_ckpt",
        "vae_cfg",
        "gen_ckpt",
        "gen_cfg",
        "stats_json",
        "vis_ckpt",
        "vis_cfg",
    }


def test_released_visibility_needs_both_files(tmp_path: Path) -> None:
    files = find_released_files(_released(tmp_path / "a", ["vae.pt", "gen.pt"]))
    assert files.vis_ckpt is None and files.vis_cfg is None
    files = find_released_files(_released(tmp_path / "b", ["vae.pt", "g.pt", "vis.pt"], False))
    assert files.vis_ckpt is None and files.vis_cfg is None


def test_released_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointSpecError, match="not a folder"):
        find_released_files(tmp_path / "missing")
    root = _released(tmp_path / "two", ["vae.pt", "gen_a.pt", "gen_b.pt"])
    with pytest.raises(CheckpointSpecError, match="expected one VAE"):
        find_released_files(root)
    root = _released(tmp_path / "cfg", ["vae.pt", "gen.pt"])
    (root / "configs" / "vae_latent_stats.json").unlink()
    with pytest.raises(CheckpointSpecError, match=r"vae_latent_stats\.json not found"):
        find_released_files(root)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CheckpointSpecError, match="not a device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointSpecError, match="no CUDA device"):
            resolve_device("cuda")
