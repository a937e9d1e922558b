"""Conditioners: the light video encoder's layout, local-path errors, caption helpers."""

import numpy as np
import pytest
import torch

from trajloom.flow.conditioners import (
    LightVideoEncoder,
    LightVideoEncoderConfig,
    UMT5TextEncoder,
    WanVideoEncoder,
    drop_text,
    frames_to_unit,
    load_light_video_encoder,
    null_text,
    precomputed_text,
    save_light_video_encoder,
    text_dropout_mask,
)

SMALL = LightVideoEncoderConfig(width=128, height=64, stride=32, hidden=8, out_channels=5)


def _frames(b=2, t=9, h=64, w=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, h, w, 3), generator=g, dtype=torch.uint8)


def test_paper_grid_shapes():
    enc = LightVideoEncoder(LightVideoEncoderConfig(hidden=8))
    out = enc(_frames(b=1, t=5, h=480, w=832))
    assert out.shape == (1, 2, 390, 16)


def test_any_input_resolution_is_resized_to_the_grid():
    enc = LightVideoEncoder(SMALL)
    assert enc(_frames(t=5, h=50, w=90)).shape == (2, 2, 8, 5)


def test_temporal_layout_first_frame_kept_then_blocks_of_four():
    torch.manual_seed(0)
    enc = LightVideoEncoder(SMALL).eval()
    frames = _frames(b=1, t=9)
    base = enc(frames)
    assert base.shape == (1, 3, 8, 5)
    # latent step 0 <- frame 0; step 1 <- frames 1..4; step 2 <- frames 5..8
    owner = [0, 1, 1, 1, 1, 2, 2, 2, 2]
    for f, step in enumerate(owner):
        bumped = frames.clone()
        bumped[0, f] = 255 - bumped[0, f]
        changed = (enc(bumped) - base).abs().amax(dim=(0, 2, 3)) > 0
        assert changed.tolist() == [s == step for s in range(3)], f"frame {f}"


def test_tokens_follow_the_row_major_grid():
    # a frame that differs only in grid cell (row 1, col 2) changes token 1 * 4 + 2, and
    # leaves the tokens two columns away (beyond the conv receptive field) untouched
    torch.manual_seed(0)
    enc = LightVideoEncoder(SMALL).eval()
    frames = torch.full((1, 1, 64, 128, 3), 128, dtype=torch.uint8)
    bumped = frames.clone()
    bumped[0, 0, 32:64, 64:96] = 255
    with torch.no_grad():
        delta = (enc(bumped) - enc(frames)).abs().sum(dim=-1)[0, 0]
    assert float(delta[6]) > 0
    assert float(delta[0]) == 0 and float(delta[4]) == 0


def test_bad_frame_counts_and_shapes_raise():
    enc = LightVideoEncoder(SMALL)
    with pytest.raises(ValueError, match="1 \\+ a multiple"):
        enc(_frames(t=6))
    with pytest.raises(ValueError, match="b t h w 3"):
        enc(torch.zeros(2, 5, 64, 128))
    with pytest.raises(ValueError, match="power of two"):
        LightVideoEncoderConfig(stride=32, resize_factor=3)


def test_light_encoder_round_trip(tmp_path):
    enc = LightVideoEncoder(SMALL)
    save_light_video_encoder(enc, tmp_path / "video_encoder")
    loaded = load_light_video_encoder(tmp_path / "video_encoder")
    frames = _frames(t=5)
    assert loaded.config == SMALL
    torch.testing.assert_close(loaded(frames), enc.eval()(frames))


def test_frames_to_unit_range_and_layout():
    frames = torch.zeros(1, 2, 4, 6, 3, dtype=torch.uint8)
    frames[0, 1, :, :, 0] = 255
    x = frames_to_unit(frames, (4, 6))
    assert x.shape == (1, 3, 2, 4, 6)
    assert float(x[0, 0, 1].min()) == 1.0 and float(x[0, 1:].max()) == -1.0


def test_missing_local_weights_name_the_path(tmp_path):
    missing = tmp_path / "no" / "Wan2.1_VAE"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        WanVideoEncoder(missing)
    with pytest.raises(FileNotFoundError, match="umT5"):
        UMT5TextEncoder(tmp_path / "umt5")


def test_a_missing_extra_names_it(tmp_path, monkeypatch):
    import sys

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as where it is not installed
    with pytest.raises(ImportError, match=r"'diffusers'.*trajloom-flow\[wan\]"):
        WanVideoEncoder(tmp_path / "vae")


def test_precomputed_text_pools_and_fills_null():
    pooled = np.arange(4, dtype=np.float32)
    tokens = np.stack([np.zeros(4), np.full(4, 2.0)]).astype(np.float32)
    out = precomputed_text([pooled, tokens, None], 4)
    assert out.tolist() == [[0, 1, 2, 3], [1, 1, 1, 1], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="same text encoder"):
        precomputed_text([np.zeros(3)], 4)


def test_caption_dropout():
    text = torch.randn(1000, 8)
    keep = text_dropout_mask(1000, 0.1, generator=torch.Generator().manual_seed(0))
    assert 0.85 < float(keep.float().mean()) < 0.95
    dropped = drop_text(text, keep)
    assert torch.equal(dropped[keep], text[keep])
    assert torch.equal(dropped[~keep], null_text(int((~keep).sum()), 8))


def test_context_frames_is_the_block_mean_rounded():
    from trajloom.flow.conditioners import context_frames

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 8, 12, 3), generator=g, dtype=torch.uint8)
    small = context_frames(frames, (2, 3))
    blocks = frames.float().reshape(2, 3, 2, 4, 3, 4, 3).mean(dim=(3, 5))
    assert small.dtype == torch.uint8
    assert torch.equal(small, blocks.round().to(torch.uint8))
    assert context_frames(small, (2, 3)) is small  # already at size: unchanged


def test_light_encoder_for_grid_reads_the_cached_size():
    from trajloom.encoding import GridSpec
    from trajloom.flow.conditioners import context_frames

    grid = GridSpec(width=128, height=64, stride=16)
    cfg = LightVideoEncoderConfig.for_grid(grid, cell=4, hidden=8, out_channels=5)
    assert cfg.input_size == (grid.grid_h * 4, grid.grid_w * 4)
    enc = LightVideoEncoder(cfg).eval()
    g = torch.Generator().manual_seed(1)
    full = torch.randint(0, 256, (1, 5, 64, 128, 3), generator=g, dtype=torch.uint8)
    cached = context_frames(full, cfg.input_size)
    with torch.no_grad():
        out = enc(full)
        assert out.shape == (1, 2, grid.num_points, 5)
        # full frames at inference give exactly what the cached frames gave in training
        assert torch.equal(out, enc(cached))
    with pytest.raises(ValueError, match="must divide the grid stride"):
        LightVideoEncoderConfig.for_grid(grid, cell=3)


def test_hashed_text_encoder_words_pairs_and_null():
    from trajloom.flow.conditioners import HashedTextConfig, HashedTextEncoder, caption_features

    cfg = HashedTextConfig(dim=8, buckets=512)
    # deterministic ids; word order matters through the pairs
    assert caption_features("Pans LEFT.", cfg) == caption_features("pans left", cfg)
    a, b = caption_features("pans left", cfg), caption_features("left pans", cfg)
    assert sorted(a[:2]) == sorted(b[:2]) and a[2] != b[2]
    enc = HashedTextEncoder(cfg)
    out = enc(["the camera pans left", "", "the camera pans right"])
    assert out.shape == (3, 8)
    assert torch.equal(out[1], torch.zeros(8))  # no words: the null embedding
    assert not torch.allclose(out[0], out[2])
    ids = torch.tensor(caption_features("the camera pans left", cfg))
    assert torch.allclose(out[0], enc.bag.weight[ids].mean(dim=0))


def test_hashed_text_encoder_round_trip(tmp_path):
    from trajloom.flow.conditioners import (
        HashedTextConfig,
        HashedTextEncoder,
        load_hashed_text_encoder,
        save_hashed_text_encoder,
    )

    enc = HashedTextEncoder(HashedTextConfig(dim=4, buckets=64))
    back = load_hashed_text_encoder(save_hashed_text_encoder(enc, tmp_path / "text"))
    assert back.config == enc.config
    assert torch.equal(back.bag.weight, enc.bag.weight)
