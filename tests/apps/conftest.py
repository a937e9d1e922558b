"""Checkpoints the sample and bench tests share: a tiny trained set and its released layout.

Both are built from the packages' APIs (no apps/train involved) and handed out as
functions by session fixtures, so each test module decides where and how often.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.encoding import normalize
from trajloom.flow.config import generator_preset
from trajloom.flow.losses import flow_matching_loss
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.visibility import (
    VisibilityConfig,
    VisibilityPredictor,
    visibility_loss,
    visibility_targets,
)
from trajloom.vae import LatentStats, TrajLoomVAE, vae_preset
from trajloom.vae.released import released_kwargs


def build_tiny_trained_set(folder: Path, steps: int = 2) -> Path:
    """A tiny trained set from the packages' APIs: a few steps of VAE, generator and
    visibility head on one synthetic clip, saved as the pipeline's folder."""
    torch.manual_seed(0)
    vae = TrajLoomVAE(vae_preset("tiny"))
    cfg = vae.config
    t = cfg.num_frames
    scene = make_scene(
        0,
        SceneConfig(cfg.width, cfg.height, cfg.stride, num_frames=2 * t, render_frames=False),
    )
    tracks = torch.from_numpy(scene.tracks).reshape(2, t, -1, 2)  # history, future
    vis = torch.from_numpy(scene.visibility).reshape(2, t, -1)
    values = normalize(tracks, cfg.grid)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = vae(values, vis).losses.total
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        z = vae.encode(values).mean
    stats = LatentStats(z.mean(dim=(0, 1, 2)), z.std(dim=(0, 1, 2)))
    zn = stats.normalize(z)
    z_hist, x1 = zn[:1], zn[1:]
    gen = TrajLoomGenerator(
        generator_preset(
            "tiny",
            latent_channels=cfg.latent_channels,
            hist_latent_frames=cfg.latent_frames,
            fut_latent_frames=cfg.latent_frames,
            num_frames_in=t,
            use_video_cond=False,
            use_text_cond=False,
        )
    )
    head = VisibilityPredictor(
        VisibilityConfig(latent_channels=cfg.latent_channels, hidden=16, depth=1)
    )
    opt = torch.optim.AdamW([*gen.parameters(), *head.parameters()], lr=1e-3)
    cond = FlowCondition(z_hist=z_hist)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = flow_matching_loss(lambda x, tt: gen(x, tt, cond), x1, z_hist, generator=g).loss
        loss = loss + visibility_loss(head(x1), visibility_targets(vis[1:], cfg.temporal_factor))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TrajLoomPipeline(vae, gen.eval(), stats, visibility=head.eval()).save_pretrained(folder)


def write_released_layout(trained_set: Path, root: Path) -> Path:
    """The trained set in the authors' layout: configs/*.json and checkpoints/*.pt."""
    pipe = TrajLoomPipeline.from_pretrained(trained_set)
    (root / "configs").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    torch.save({"vae": pipe.vae.state_dict()}, root / "checkpoints" / "trajloom_vae.pt")
    torch.save(
        {"generator": pipe.generator.state_dict()}, root / "checkpoints" / "trajloom_generator.pt"
    )
    torch.save(
        {"model": pipe.visibility.state_dict()}, root / "checkpoints" / "visibility_predictor.pt"
    )
    (root / "configs" / "trajloom_vae_config.json").write_text(
        json.dumps(released_kwargs(pipe.vae.config))
    )
    (root / "configs" / "trajloom_generator_config.json").write_text(
        json.dumps(
            {
                "generator": pipe.generator.config.to_dict(),
                "train": {"x0_mode": "anchor_first", "x0_noise_std": 0.1},
            }
        )
    )
    vc = pipe.visibility.config
    (root / "configs" / "vis_predictor_config.json").write_text(
        json.dumps(
            {
                "predictor": {
                    "latent_channels": vc.latent_channels,
                    "hidden": vc.hidden,
                    "depth": vc.depth,
                }
            }
        )
    )
    pipe.latent_stats.to_json(root / "configs" / "vae_latent_stats.json")
    return root


@pytest.fixture(scope="session")
def make_trained_set() -> Callable[..., Path]:
    """``make_trained_set(folder, steps=2)``: write a tiny trained set (with visibility head)."""
    return build_tiny_trained_set


@pytest.fixture(scope="session")
def make_released_layout() -> Callable[[Path, Path], Path]:
    """``make_released_layout(trained_set, root)``: the set in the authors' layout."""
    return write_released_layout
