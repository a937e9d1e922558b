"""Finding trained sets and released files, and the device (``trajloom.flow.forecast``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trajloom.flow.forecast import (
    ForecastError,
    ReleasedFiles,
    find_released_files,
    find_trained_set,
    find_vae_folder,
    resolve_device,
)
from trajloom.vae import TrajLoomVAE, save_pretrained, vae_preset


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
    with pytest.raises(ForecastError, match="holds no trained set"):
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
    with pytest.raises(ForecastError, match=message) as info:
        find_trained_set(target)
    assert isinstance(info.value, ValueError) and str(target) in str(info.value)


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


def test_released_visibility_needs_both_files(tmp_path: Path) -> None:
    files = find_released_files(_released(tmp_path / "a", ["vae.pt", "gen.pt"]))
    assert files.vis_ckpt is None and files.vis_cfg is None
    files = find_released_files(_released(tmp_path / "b", ["vae.pt", "g.pt", "vis.pt"], False))
    assert files.vis_ckpt is None and files.vis_cfg is None


def test_released_errors(tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="not a folder"):
        find_released_files(tmp_path / "missing")
    root = _released(tmp_path / "two", ["vae.pt", "gen_a.pt", "gen_b.pt"])
    with pytest.raises(ForecastError, match="expected one VAE"):
        find_released_files(root)
    root = _released(tmp_path / "cfg", ["vae.pt", "gen.pt"])
    (root / "configs" / "vae_latent_stats.json").unlink()
    with pytest.raises(ForecastError, match=r"vae_latent_stats\.json not found"):
        find_released_files(root)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ForecastError, match="not a device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ForecastError, match="no CUDA device"):
            resolve_device("cuda")


def test_vae_folder_itself_or_inside_a_trained_set(tmp_path: Path) -> None:
    vae = save_pretrained(TrajLoomVAE(vae_preset("tiny")), tmp_path / "set" / "vae")
    assert find_vae_folder(vae) == vae
    assert find_vae_folder(tmp_path / "set") == vae
    assert find_vae_folder(tmp_path) == vae  # a run folder: */vae
    _trained_set(tmp_path / "other")
    with pytest.raises(ForecastError, match=r"vae:.*other: holds no trajectory-VAE"):
        find_vae_folder(tmp_path / "other")
