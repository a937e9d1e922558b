"""Shared layers: key names, sin-cos tables, Fourier features."""

from __future__ import annotations

import numpy as np
import torch

from trajloom.vae.layers import (
    LearnableFourierFeatures,
    Mlp,
    PatchEmbed,
    SelfAttention,
    sincos_1d,
    sincos_2d,
)


def test_key_names_follow_timm_and_the_release():
    assert list(Mlp(4, 8, 2).state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert list(SelfAttention(8, 2).state_dict()) == [
        "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
    ]  # fmt: skip
    assert list(PatchEmbed(2, 8, 4).state_dict()) == ["proj.weight", "proj.bias"]
    lff = LearnableFourierFeatures(2, 8, 16)
    assert list(lff.state_dict()) == [
        "w", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip
    assert not lff.w.requires_grad and lff.w.shape == (4, 2)


def test_mlp_uses_exact_gelu():
    mlp = Mlp(3, 5)
    x = torch.randn(4, 3)
    h = x @ mlp.fc1.weight.T + mlp.fc1.bias
    exact = 0.5 * h * (1 + torch.erf(h / 2**0.5))
    torch.testing.assert_close(mlp(x), exact @ mlp.fc2.weight.T + mlp.fc2.bias)


def test_sincos_2d_by_hand():
    # dim 4: one frequency (1.0) per axis; channels [sin x, cos x, sin y, cos y]
    emb = sincos_2d(4, 2, 3)
    assert emb.shape == (6, 4)
    for i in range(2):
        for j in range(3):
            row = emb[i * 3 + j]
            np.testing.assert_allclose(row, [np.sin(j), np.cos(j), np.sin(i), np.cos(i)])


def test_sincos_1d_frequencies():
    emb = sincos_1d(8, np.array([0.0, 2.0]))
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(emb[1], np.concatenate([np.sin(2 * omega), np.cos(2 * omega)]))


def test_fourier_features_formula():
    lff = LearnableFourierFeatures(2, 6, 12)
    x = torch.randn(5, 2)
    xw = x @ lff.w.T
    feats = torch.cat([torch.cos(xw), torch.sin(xw)], -1) / 6**0.5
    torch.testing.assert_close(lff(x), lff.mlp(feats))


def test_self_attention_qk_norm_has_no_parameters_and_normalizes():
    a = SelfAttention(8, 2, qk_norm=True)
    assert set(a.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    x = torch.randn(1, 4, 8)
    # scaling q and k by any factor leaves qk-normed attention unchanged
    b = SelfAttention(8, 2, qk_norm=True)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.qkv.weight[:16] *= 3.0
        b.qkv.bias[:16] *= 3.0
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
