"""Config validation, presets, and safetensors checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import trajloom.vae as tv
from trajloom.encoding import DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.vae.released import config_from_released, released_kwargs


def test_paper_preset_values():
    c = tv.vae_preset("paper")
    assert (c.encoder_depth, c.decoder_depth, c.hidden_size, c.num_heads) == (16, 16, 512, 8)
    assert (c.latent_channels, c.width, c.height, c.stride, c.num_frames) == (16, 832, 480, 32, 81)
    assert (c.pos_embed_dim, c.use_offsets, c.beta) == (64, True, 5e-5)
    assert c.latent_frames == 21 and c.num_tokens == 390
    assert c.grid.grid_h == 15 and c.grid.grid_w == 26
    assert c.grid == DEFAULT_GRID and c.num_frames == DEFAULT_HISTORY


def test_small_and_tiny_presets_keep_their_geometry():
    small, tiny = tv.vae_preset("small"), tv.vae_preset("tiny")
    assert (small.grid, small.num_frames, small.latent_frames) == (GridSpec(256, 192, 32), 33, 9)
    assert (tiny.grid, tiny.num_frames, tiny.latent_frames) == (GridSpec(128, 96, 32), 17, 5)
    assert small.temporal_factor == tiny.temporal_factor == 4


# config.json as save_pretrained wrote it before the geometry became a GridSpec.
PREVIOUS_TINY = {
    "width": 128,
    "height": 96,
    "stride": 32,
    "num_frames": 17,
    "temporal_factor": 4,
    "temporal_compression": True,
    "hidden_size": 64,
    "num_heads": 4,
    "encoder_depth": 4,
    "decoder_depth": 4,
    "mlp_ratio": 4.0,
    "latent_channels": 8,
    "pos_embed_dim": 16,
    "use_offsets": True,
    "beta": 5e-5,
    "gradient_checkpointing": False,
}


def test_previous_config_layout_still_loads(tmp_path):
    assert tv.VAEConfig.from_dict(PREVIOUS_TINY) == tv.vae_preset("tiny")
    assert tv.vae_preset("tiny", width=64).grid == GridSpec(64, 96, 32)
    assert tv.vae_preset("tiny").to_dict()["grid"] == {"width": 128, "height": 96, "stride": 32}
    # a trained set saved in the previous layout
    folder = tv.save_pretrained(tv.TrajLoomVAE(tv.vae_preset("tiny")), tmp_path / "vae")
    (folder / "config.json").write_text(json.dumps(PREVIOUS_TINY))
    assert tv.load_pretrained(folder).config == tv.vae_preset("tiny")


@pytest.mark.parametrize("name", sorted(tv.VAE_PRESETS))
def test_presets_round_trip_through_json(name):
    c = tv.vae_preset(name)
    assert tv.VAEConfig.from_json(c.to_json()) == c
    assert config_from_released(released_kwargs(c)) == c
    with pytest.raises(Exception):
        c.hidden_size = 3  # frozen


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_frames": 80}, "1 \\+ a multiple"),
        ({"width": 100}, "multiples of"),
        ({"encoder_depth": 3}, "even"),
        ({"num_heads": 5}, "divisible"),
        ({"hidden_size": 0}, "positive"),
        ({"num_frames": 1, "temporal_factor": 4}, "single latent step"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        tv.vae_preset("tiny", **changes)


def test_unknown_preset_and_keys():
    with pytest.raises(ValueError, match="choose one of"):
        tv.vae_preset("huge")
    with pytest.raises(ValueError, match="unknown keys"):
        tv.VAEConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match=r"VAEConfig.grid must be a trajloom.encoding.GridSpec"):
        tv.VAEConfig(grid=(832, 480, 32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="learn_sigma"):
        config_from_released({"learn_sigma": True})


def test_save_and_load_pretrained(tmp_path):
    cfg = tv.vae_preset("tiny")
    torch.manual_seed(0)
    model = tv.TrajLoomVAE(cfg)
    with torch.no_grad():
        model.final_layer.weight.normal_(0, 0.1)
    folder = tv.save_pretrained(model, tmp_path / "vae")
    assert json.loads((folder / "config.json").read_text()) == cfg.to_dict()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert tv.VAEConfig.from_json(f.metadata()["config"]) == cfg
    loaded = tv.load_pretrained(folder)
    assert loaded.config == cfg and not loaded.training
    z = torch.randn(1, cfg.latent_frames, cfg.num_tokens, cfg.latent_channels)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    (folder / "config.json").unlink()  # the metadata copy suffices
    assert tv.load_pretrained(folder).config == cfg
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        tv.load_pretrained(tmp_path / "missing")
