"""The visibility head (appendix E.3): released loading, targets, loss, read-out."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trajloom.encoding import GridSpec
from trajloom.flow.released import released_visibility_config, visibility_from_released
from trajloom.flow.visibility import (
    VisibilityConfig,
    VisibilityPredictor,
    inside_image,
    predict_visibility,
    upsample_visibility,
    visibility_loss,
    visibility_targets,
)


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: one thread is faster, and far faster on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def released_vis_shapes(p: dict) -> dict[str, tuple[int, ...]]:
    """State-dict entries of the released TinyVisPredictor (models/visibility_predictor.py)."""
    c, h, k = p["latent_channels"], p["hidden"], p["kernel_size"]
    feat = c * (1 + int(p["use_hist_last"]) + int(p["use_hist_last"] and p["use_delta_to_hist"]))
    s = {"in_proj.weight": (h, feat), "in_proj.bias": (h,)}
    for i in range(p["depth"]):  # Conv1d at even indices of temporal_net, SiLU at odd
        s[f"temporal_net.{2 * i}.weight"] = (h, h, k)
        s[f"temporal_net.{2 * i}.bias"] = (h,)
    s["out.weight"] = (1, h, 1)
    s["out.bias"] = (1,)
    return s


def ref_logits(sd, p, z_fut, z_hist=None):
    """Per token: Linear, then each Conv1d written as a sum over zero-padded shifts, SiLU."""
    b, t, n, _ = z_fut.shape
    feats = [z_fut]
    if p["use_hist_last"]:
        last = z_hist[:, -1:].expand_as(z_fut)
        feats.append(last)
        if p["use_delta_to_hist"]:
            feats.append(z_fut - last)
    x = torch.cat(feats, dim=-1) @ sd["in_proj.weight"].T + sd["in_proj.bias"]  # b t n h
    k = p["kernel_size"]
    pad = k // 2
    for i in range(p["depth"]):
        w, bias = sd[f"temporal_net.{2 * i}.weight"], sd[f"temporal_net.{2 * i}.bias"]
        xp = torch.cat(
            [x.new_zeros(b, pad, n, x.shape[-1]), x, x.new_zeros(b, pad, n, x.shape[-1])], 1
        )
        y = bias.expand(b, t, n, -1).clone()
        for j in range(k):
            y = y + xp[:, j : j + t] @ w[:, :, j].T
        x = y * torch.sigmoid(y)
    return (x @ sd["out.weight"][:, :, 0].T + sd["out.bias"])[..., 0]


PREDICTOR = {
    "latent_channels": 16,
    "hidden": 64,
    "depth": 3,
    "kernel_size": 3,
    "use_hist_last": False,
    "use_delta_to_hist": False,
}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_hist_last": True, "use_delta_to_hist": True, "kernel_size": 5, "depth": 2}],
)
def test_strict_released_load_matches_reference(tmp_path, overrides):
    p = {**PREDICTOR, **overrides}
    gen = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(s, generator=gen) / math.sqrt(max(1, s[-1] if len(s) > 1 else 1))
        for k, s in released_vis_shapes(p).items()
    }
    torch.save({"model": state, "step": 7}, tmp_path / "visibility_predictor.pt")
    full = {
        "predictor": p,
        "temp_stride": 4,
        "patch_size": 32,
        "eval": {"thresh": 0.4},
        "train": {"lr": 3e-4},
    }
    (tmp_path / "vis.json").write_text(json.dumps(full))
    model = visibility_from_released(tmp_path / "visibility_predictor.pt", tmp_path / "vis.json")
    assert set(model.state_dict()) == set(state)
    assert model.config.threshold == 0.4 and model.config.temporal_factor == 4
    z_fut = torch.randn(2, 21, 5, 16, generator=gen, dtype=torch.float64)
    z_hist = torch.randn(2, 21, 5, 16, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ours = model.double()(z_fut, z_hist)
    sd = {k: v.double() for k, v in state.items()}
    torch.testing.assert_close(ours, ref_logits(sd, p, z_fut, z_hist), rtol=1e-10, atol=1e-10)


def test_released_config_file_forms(tmp_path):
    assert released_visibility_config({"predictor": PREDICTOR}) == VisibilityConfig()
    assert released_visibility_config(PREDICTOR) == VisibilityConfig()
    with pytest.raises(ValueError, match="unknown keys"):
        released_visibility_config({"predictor": {**PREDICTOR, "hiden": 3}})


def test_released_key_mismatch_is_an_error(tmp_path):
    state = {k: torch.zeros(s) for k, s in released_vis_shapes(PREDICTOR).items()}
    state.pop("out.bias")
    torch.save({"model": state}, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="missing keys"):
        visibility_from_released(tmp_path / "v.pt", {"predictor": PREDICTOR})


def test_config_validation():
    with pytest.raises(ValueError, match="odd"):
        VisibilityConfig(kernel_size=4)
    with pytest.raises(ValueError, match="use_hist_last"):
        VisibilityConfig(use_delta_to_hist=True)
    with pytest.raises(ValueError, match="threshold"):
        VisibilityConfig(threshold=1.0)
    c = VisibilityConfig(use_hist_last=True)
    assert VisibilityConfig.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="z_hist"):
        VisibilityPredictor(c)(torch.zeros(1, 3, 2, 16))


def test_targets_are_max_pooled_frame_visibility():
    gen = torch.Generator().manual_seed(0)
    vis = torch.rand(3, 81, 7, generator=gen) > 0.8
    targets = visibility_targets(vis)
    assert targets.shape == (3, 21, 7)
    pooled = torch.nn.functional.max_pool1d(
        vis.float().transpose(1, 2).reshape(21, 81), kernel_size=4, stride=4, ceil_mode=True
    )
    torch.testing.assert_close(targets, pooled.reshape(3, 7, 21).transpose(1, 2))


def test_loss_is_binary_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    targets = (torch.rand(2, 5, 3, generator=gen) > 0.5).double()
    p = torch.sigmoid(logits)
    bce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    torch.testing.assert_close(visibility_loss(logits, targets), bce.mean())
    weighted = -(3.0 * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    torch.testing.assert_close(visibility_loss(logits, targets, pos_weight=3.0), weighted.mean())
    mask = torch.zeros_like(targets)
    mask[0] = 1
    torch.testing.assert_close(visibility_loss(logits, targets, mask=mask), bce[0].mean())
    with pytest.raises(ValueError, match="one shape"):
        visibility_loss(logits, targets[:, :-1])


def test_upsample_repeats_each_step_and_crops():
    probs = torch.arange(2 * 21 * 3, dtype=torch.float32).view(2, 21, 3)
    up = upsample_visibility(probs, 81)
    assert up.shape == (2, 81, 3)
    for frame in range(81):
        assert torch.equal(up[:, frame], probs[:, frame // 4])
    with pytest.raises(ValueError, match="fewer than"):
        upsample_visibility(probs, 85)


def test_predict_thresholds_and_forces_outside_points_invisible():
    spec = GridSpec(width=128, height=96, stride=32)
    model = VisibilityPredictor(VisibilityConfig())
    with torch.no_grad():  # a constant logit per token: 0 for token 0, +2 elsewhere
        for p in model.parameters():
            p.zero_()
        model.out.bias.fill_(2.0)
    z = torch.zeros(1, 21, 4, 16)
    tracks = torch.full((1, 81, 4, 2), 10.0)
    tracks[0, 5, 1, 0] = -0.01  # left of the image
    tracks[0, 6, 2, 1] = 95.5  # below the last row (H - 1 = 95)
    tracks[0, 7, 3, 0] = float("nan")
    tracks[0, 8, 3] = torch.tensor([127.0, 95.0])  # exactly on the last pixel: inside
    vis, probs = predict_visibility(model, z, num_frames=81, tracks=tracks, spec=spec)
    assert vis.shape == probs.shape == (1, 81, 4) and vis.dtype == torch.bool
    torch.testing.assert_close(
        probs, torch.full((1, 81, 4), torch.sigmoid(torch.tensor(2.0)).item())
    )
    expected = torch.ones(1, 81, 4, dtype=torch.bool)
    expected[0, 5, 1] = expected[0, 6, 2] = expected[0, 7, 3] = False
    assert torch.equal(vis, expected)
    assert torch.equal(inside_image(tracks, spec), expected)
    # threshold: strictly greater is visible
    vis, _ = predict_visibility(model, z, num_frames=81, threshold=float(probs[0, 0, 0]))
    assert not vis.any()
    with pytest.raises(ValueError, match="spec"):
        predict_visibility(model, z, num_frames=81, tracks=tracks)


def test_head_learns_visibility_from_latents():
    # Visibility that is a function of the latent (channel 0 > 0) is learnable by BCE.
    torch.manual_seed(0)
    model = VisibilityPredictor(VisibilityConfig(hidden=16, depth=2))
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(4, 21, 6, 16, generator=gen)
    targets = (z[..., 0] > 0).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = visibility_loss(model(z), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = ((model(z) > 0).float() == targets).float().mean()
    assert accuracy > 0.97, accuracy
