"""The released conditioners (Wan2.1 VAE video latents, pooled umT5 captions) on tiny local
models in their published layouts (fixture ``tiny_wan21`` in tests/conftest.py)."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trajloom.encoding import GridSpec
from trajloom.flow.conditioners import (
    WAN21_VAE_CONFIG,
    UMT5TextEncoder,
    WanVideoEncoder,
    umt5_width,
)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

# 4 x 2 tokens of stride 16: the Wan VAE reads 32 x 16 pixels (resize factor 2)
GRID = GridSpec(width=64, height=32, stride=16)


def _frames(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, h, w, 3), generator=g, dtype=torch.uint8)


def _reference_latents(vae_dir, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Wan latents of ``frames`` by hand: [-1, 1], bilinear resize, posterior mean, the
    VAE's latent statistics, then token (i, j) = latent pixel (i, j), index i * w + j."""
    vae = diffusers.AutoencoderKLWan.from_pretrained(str(vae_dir)).eval()
    b, t = frames.shape[:2]
    x = frames.float().permute(0, 1, 4, 2, 3).reshape(b * t, 3, *frames.shape[2:4])
    x = F.interpolate(x / 255.0 * 2.0 - 1.0, size=size, mode="bilinear", align_corners=False)
    x = x.reshape(b, t, 3, *size).permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean
    mean = torch.tensor(vae.config.latents_mean)
    std = torch.tensor(vae.config.latents_std)
    _, c, tl, h, w = mu.shape
    out = torch.empty(b, tl, h * w, c)
    for i in range(h):
        for j in range(w):
            out[:, :, i * w + j] = ((mu[:, :, :, i, j].transpose(1, 2)) - mean) / std
    return out


# ----------------------------------------------------------------------------- Wan2.1 VAE


def test_wan_latents_on_the_token_grid_equal_a_hand_computation(tiny_wan21):
    enc = WanVideoEncoder(tiny_wan21 / "vae", grid=GRID)
    assert enc.resize_factor == 2 and enc.size == (16, 32)
    frames = _frames(2, 9, 32, 64)
    out = enc(frames)
    assert out.shape == (2, 3, GRID.num_points, 16) and out.dtype == torch.float32
    expected = _reference_latents(tiny_wan21 / "vae", frames, (16, 32))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # frames at another resolution are resized to the same input first
    big = frames.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected_big = _reference_latents(tiny_wan21 / "vae", big, (16, 32))
    torch.testing.assert_close(enc(big), expected_big, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_wan_token_order_follows_the_image(tiny_wan21, axis):
    """Changing the far half of every frame (right, or bottom) changes the latents of the
    far tokens: row-major tokens, column ``k % grid_w``, row ``k // grid_w``."""
    long, short = 256, 32  # 16 x 2 tokens (or 2 x 16): the changed half is far from the rest
    grid = GridSpec(width=long, height=short, stride=16)
    if axis == "y":
        grid = GridSpec(width=short, height=long, stride=16)
    enc = WanVideoEncoder(tiny_wan21 / "vae", grid=grid)
    # without its one global layer (the mid-block attention) the VAE is convolutional,
    # so a change stays near where it is in the image
    attention = enc.vae.encoder.mid_block.attentions[0].proj
    with torch.no_grad():
        attention.weight.zero_()
        attention.bias.zero_()
    base = torch.full((1, 5, grid.height, grid.width, 3), 128, dtype=torch.uint8)
    changed = base.clone()
    noise = _frames(1, 5, grid.height, grid.width, seed=3)
    if axis == "x":
        changed[:, :, :, long // 2 :] = noise[:, :, :, long // 2 :]
    else:
        changed[:, :, long // 2 :] = noise[:, :, long // 2 :]
    delta = (enc(changed) - enc(base)).abs().mean(dim=(0, 1, 3))  # per token
    k = torch.arange(grid.num_points)
    position = k % grid.grid_w if axis == "x" else k // grid.grid_w
    near, far = delta[position >= 12].mean(), delta[position < 4].mean()
    assert near > 10 * far, (near, far)


def test_wan_single_file_loads_offline_and_equals_the_folder(tiny_wan21, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked for a file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frames = _frames(1, 5, 32, 64, seed=1)
    folder = WanVideoEncoder(tiny_wan21 / "vae", grid=GRID)(frames)
    for config in (tiny_wan21 / "vae", tiny_wan21 / "vae" / "config.json"):
        single = WanVideoEncoder(tiny_wan21 / "Wan2.1_VAE.pth", grid=GRID, config=config)
        torch.testing.assert_close(single(frames), folder, rtol=0, atol=0)


def test_wan_single_file_defaults_to_the_wan21_config_and_refuses_other_weights(tiny_wan21):
    # The default config is the Wan2.1 VAE (as diffusers' defaults for AutoencoderKLWan):
    # the tiny file does not fit it and is refused instead of leaving random weights.
    with pytest.raises(ValueError, match=r"Wan2.1_VAE.pth does not fit the Wan VAE config"):
        WanVideoEncoder(tiny_wan21 / "Wan2.1_VAE.pth", grid=GRID)
    defaults = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    for key, value in WAN21_VAE_CONFIG.items():
        if key != "_class_name":
            assert list(np.atleast_1d(defaults[key].default)) == list(np.atleast_1d(value)), key
    # a file with missing weights: named, not silently random
    state = torch.load(tiny_wan21 / "Wan2.1_VAE.pth", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, tiny_wan21.parent / "partial.pth")
    with pytest.raises(ValueError, match=r"1 weights missing"):
        WanVideoEncoder(tiny_wan21.parent / "partial.pth", grid=GRID, config=tiny_wan21 / "vae")


def test_wan_resize_factor_follows_the_stride(tiny_wan21):
    paper = WanVideoEncoder(tiny_wan21 / "vae")  # 832 x 480 at stride 32
    assert paper.resize_factor == 4 and paper.size == (120, 208)
    with pytest.raises(ValueError, match=r"stride 12 must be a multiple of 8"):
        WanVideoEncoder(tiny_wan21 / "vae", grid=GridSpec(width=48, height=24, stride=12))
    with pytest.raises(ValueError, match=r"resize_factor \* 8 must equal the grid stride"):
        WanVideoEncoder(tiny_wan21 / "vae", grid=GRID, resize_factor=4)


def test_wan_refuses_frame_counts_off_its_temporal_layout(tiny_wan21):
    enc = WanVideoEncoder(tiny_wan21 / "vae", grid=GRID)
    with pytest.raises(ValueError, match=r"num_frames=8 is not 1 \+ a multiple of factor=4"):
        enc(_frames(1, 8, 32, 64))
    with pytest.raises(ValueError, match=r"'b t h w 3'"):
        enc(_frames(1, 9, 32, 64)[..., :2])


def test_wan_missing_config_is_named(tiny_wan21, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config.json.*vae/ folder"):
        WanVideoEncoder(tmp_path, grid=GRID)


# ----------------------------------------------------------------------------- umT5


def _reference_pooled(folder, caption: str) -> torch.Tensor:
    """One caption alone (no padding): mean of umT5's last hidden state over its tokens."""
    tok = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    model = transformers.UMT5EncoderModel.from_pretrained(str(folder / "text_encoder")).eval()
    ids = tok(caption, return_tensors="pt").input_ids
    assert ids[0, -1] == tok.eos_token_id
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state[0].mean(dim=0)


def test_umt5_pools_over_the_caption_tokens_whatever_the_padding(tiny_wan21):
    enc = UMT5TextEncoder(tiny_wan21 / "text_encoder")
    assert enc.tokenizer_path == str(tiny_wan21 / "tokenizer")  # the sibling folder
    assert enc.dim == umt5_width(tiny_wan21 / "text_encoder") == 24
    captions = ["a red ball", "the camera pans left slowly and a dog runs across the scene"]
    out = enc(captions)
    assert out.shape == (2, 24) and out.dtype == torch.float32
    for row, caption in zip(out, captions, strict=True):
        torch.testing.assert_close(row, _reference_pooled(tiny_wan21, caption))
    torch.testing.assert_close(enc(captions[:1])[0], out[0])  # no padding alone


def test_umt5_collapses_whitespace_and_truncates(tiny_wan21):
    enc = UMT5TextEncoder(tiny_wan21 / "text_encoder", max_length=4)
    a, b = enc(["a red ball", "  a \t red\n\nball "])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # 3 words + </s> fit in 4 tokens; more words are cut
    long, short = enc(["the camera pans left slowly", "the camera pans"])
    torch.testing.assert_close(long, short, rtol=0, atol=0)
    assert not torch.equal(enc(["the camera tilts"])[0], short)


def test_umt5_tokenizer_folder_and_missing_paths(tiny_wan21, tmp_path):
    alone = tmp_path / "elsewhere" / "text_encoder"
    shutil.copytree(tiny_wan21 / "text_encoder", alone)
    with pytest.raises(FileNotFoundError, match=r"umT5 tokenizer not found.*tokenizer_path="):
        UMT5TextEncoder(alone)
    enc = UMT5TextEncoder(alone, tokenizer_path=tiny_wan21 / "tokenizer")
    ref = UMT5TextEncoder(tiny_wan21 / "text_encoder")
    torch.testing.assert_close(enc(["a blue square"]), ref(["a blue square"]), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match=r"config of the umT5 encoder not found"):
        UMT5TextEncoder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"umT5 encoder weights not found.*umt5_path="):
        UMT5TextEncoder(tmp_path / "nothing")
    assert json.loads((tiny_wan21 / "text_encoder" / "config.json").read_text())["d_model"] == 24


# ----------------------------------------------------------------------------- pipeline


def _pipeline_with_released_context(tiny_wan21, max_length: int = 16):
    """A tiny pipeline (128 x 96 at stride 32, 17 frames) conditioned on the tiny Wan2.1
    VAE and umT5, its generator perturbed so that every input counts."""
    from trajloom.flow.config import generator_preset
    from trajloom.flow.model import TrajLoomGenerator
    from trajloom.flow.pipeline import TrajLoomPipeline
    from trajloom.vae import LatentStats, TrajLoomVAE, vae_preset

    torch.manual_seed(0)
    vae = TrajLoomVAE(vae_preset("tiny"))
    gen = TrajLoomGenerator(
        generator_preset("tiny", video_latent_channels=16, text_embed_dim=24).for_vae(vae.config)
    )
    with torch.no_grad():  # fresh generators zero some projections
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    video = WanVideoEncoder(tiny_wan21 / "vae", grid=vae.config.grid)
    text = UMT5TextEncoder(tiny_wan21 / "text_encoder", max_length=max_length)
    stats = LatentStats(torch.linspace(-0.1, 0.1, 8), torch.linspace(0.5, 1.5, 8))
    return TrajLoomPipeline(vae, gen, stats, video_encoder=video, text_encoder=text)


def _history_and_frames(seed: int = 5):
    from trajloom.encoding import query_points
    from trajloom.vae import vae_preset

    g = torch.Generator().manual_seed(seed)
    q = query_points(vae_preset("tiny").grid)
    tracks = (q + torch.randn(1, 17, 12, 2, generator=g).cumsum(1)).clamp(0, 95)
    return tracks, _frames(1, 17, 96, 128, seed=seed)


def test_a_trained_set_names_the_released_conditioners_and_loads_them(tiny_wan21, tmp_path):
    from trajloom.flow.pipeline import TrajLoomPipeline

    pipe = _pipeline_with_released_context(tiny_wan21)
    video, text = pipe.video_encoder, pipe.text_encoder
    tracks, frames = _history_and_frames()
    cond, _ = pipe.condition(tracks, frames=frames, caption="a red ball moves left")
    torch.testing.assert_close(cond.video, video(frames))
    torch.testing.assert_close(cond.text, text(["a red ball moves left"]))

    folder = pipe.save_pretrained(tmp_path / "set")
    meta = json.loads((folder / "pipeline.json").read_text())
    assert meta["video_encoder"] == {
        "kind": "wan",
        "path": str((tiny_wan21 / "vae").resolve()),
        "resize_factor": 4,
    }
    assert meta["text_encoder"]["path"] == str((tiny_wan21 / "text_encoder").resolve())
    assert meta["text_encoder"]["max_length"] == 16
    back = TrajLoomPipeline.from_pretrained(folder)
    assert isinstance(back.video_encoder, WanVideoEncoder)
    assert isinstance(back.text_encoder, UMT5TextEncoder) and back.text_encoder.max_length == 16
    kwargs = dict(frames=frames, caption="a red ball moves left", steps=2, seed=3)
    assert torch.equal(pipe(tracks, **kwargs).latents, back(tracks, **kwargs).latents)
    # on a machine without the recorded weights: a clear error, and an override
    meta["video_encoder"]["path"] = str(tmp_path / "gone" / "vae")
    (folder / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match=r"Wan2.1 VAE weights not found.*wan_vae_path="):
        TrajLoomPipeline.from_pretrained(folder)
    moved = TrajLoomPipeline.from_pretrained(folder, wan_vae_path=tiny_wan21 / "vae")
    assert torch.equal(moved(tracks, **kwargs).latents, back(tracks, **kwargs).latents)


def test_from_released_feeds_the_released_conditioners(tiny_wan21, tmp_path):
    """The authors' layout (.pt checkpoints, generator config with ``video_vae`` and
    ``text_encoder`` sections) with local Wan2.1 VAE and umT5 paths."""
    from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline
    from trajloom.vae.released import released_kwargs

    pipe = _pipeline_with_released_context(tiny_wan21, max_length=5)
    torch.save({"vae": pipe.vae.state_dict()}, tmp_path / "vae.pt")
    torch.save({"generator": pipe.generator.state_dict()}, tmp_path / "gen.pt")
    gen_cfg = {
        "generator": pipe.generator.config.to_dict(),
        "video_vae": {"resize_factor": 4},
        "text_encoder": {"max_length": 5},
        "train": {"x0_mode": "anchor_first", "x0_noise_std": 0.1, "latent_stats_key": "z_all"},
    }
    (tmp_path / "gen.json").write_text(json.dumps(gen_cfg))
    pipe.latent_stats.to_json(tmp_path / "stats.json")
    released = TrajLoomPipeline.from_released(
        tmp_path / "vae.pt",
        released_kwargs(pipe.vae.config),
        tmp_path / "gen.pt",
        tmp_path / "gen.json",
        tmp_path / "stats.json",
        wan_vae_path=tiny_wan21 / "vae",
        umt5_path=tiny_wan21 / "text_encoder",
        config=PipelineConfig(),
    )
    assert released.text_encoder.max_length == 5 and released.video_encoder.resize_factor == 4
    tracks, frames = _history_and_frames(seed=6)
    caption = "the camera pans left slowly"  # cut to 4 words + </s> by max_length 5
    kwargs = dict(frames=frames, caption=caption, steps=2, seed=1)
    # generated latents: the untrained tiny VAE decodes them all to the same tracks
    said = released(tracks, **kwargs).latents
    torch.testing.assert_close(pipe(tracks, **kwargs).latents, said)
    assert not torch.equal(released(tracks, frames=frames, steps=2, seed=1).latents, said)


def test_bfloat16_encoders_return_float32_close_to_float32(tiny_wan21):
    """The release runs both encoders in bf16; the context stays float32 for the generator."""
    frames = _frames(2, 9, 32, 64, seed=7)
    ref = WanVideoEncoder(tiny_wan21 / "vae", grid=GRID)(frames)
    half = WanVideoEncoder(tiny_wan21 / "vae", grid=GRID, dtype=torch.bfloat16)(frames)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=0.05, atol=0.05)
    captions = ["a red ball", "the camera pans left"]
    ref = UMT5TextEncoder(tiny_wan21 / "text_encoder")(captions)
    half = UMT5TextEncoder(tiny_wan21 / "text_encoder", dtype=torch.bfloat16)(captions)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=0.05, atol=0.05)


def test_loading_umt5_leaves_device_contexts_working(tiny_wan21):
    """transformers 5 patches torch.linspace while it builds a model on the meta device;
    torch's cached table of factory functions must not keep the patch (it did: afterwards a
    generator built under torch.device('meta') got a CPU parameter)."""
    from torch.utils import _device

    _device._device_constructors.cache_clear()  # as in a fresh process
    UMT5TextEncoder(tiny_wan21 / "text_encoder")
    with torch.device("meta"):
        assert torch.linspace(0.0, 1.0, 3).device.type == "meta"
