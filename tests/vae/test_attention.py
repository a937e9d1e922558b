"""Attention backend dispatch: agreement between kernels, selection, fallback, reporting."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

# the package re-exports the function ``attention`` under the module's name
att = importlib.import_module("trajloom.vae.attention")


def _qkv(sq=5, sk=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, sq, 3, 8, generator=g)
    k = torch.randn(2, sk, 3, 8, generator=g)
    v = torch.randn(2, sk, 3, 8, generator=g)
    return q, k, v


def _explicit(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v written out per batch and head."""
    out = torch.empty_like(q[:, :, :, :1].expand(-1, -1, -1, v.shape[-1])).clone()
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            logits = q[b, :, h] @ k[b, :, h].T / q.shape[-1] ** 0.5
            if mask is not None:
                logits = logits.masked_fill(~mask[b, h], float("-inf"))
            out[b, :, h] = logits.softmax(-1) @ v[b, :, h]
    return out


@pytest.mark.parametrize("backend", ["math", "sdpa", "auto"])
def test_backends_compute_attention(backend):
    q, k, v = _qkv()
    out = att.attention(q, k, v, backend=backend)
    assert out.shape == (2, 5, 3, 8)
    torch.testing.assert_close(out, _explicit(q, k, v), rtol=1e-5, atol=1e-5)


def test_auto_on_cpu_runs_sdpa_and_reports_it():
    q, k, v = _qkv()
    att.attention(q, k, v, backend="math")
    assert att.last_attention_backend() == "math"
    att.attention(q, k, v, backend="auto")
    assert att.last_attention_backend() == "sdpa"


def test_mask_is_respected_by_every_backend():
    q, k, v = _qkv()
    mask = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[..., 0] = True  # every query attends to something
    ref = _explicit(q, k, v, mask)
    for backend in ("math", "sdpa", "auto", "xformers"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = att.attention(q, k, v, backend=backend, attn_mask=mask)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_xformers_request_without_cuda_falls_back_with_one_warning():
    q, k, v = _qkv()
    att._warned.discard(f"xformers:{q.device}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = att.attention(q, k, v, backend="xformers")
        out2 = att.attention(q, k, v, backend="xformers")
    assert att.last_attention_backend() == "sdpa"
    assert len([w for w in caught if "xformers" in str(w.message)]) == 1
    torch.testing.assert_close(out1, out2)
    assert "xformers" not in att.available_attention_backends("cpu")
    assert att.xformers_status("cpu") is not None


def test_default_backend_setting_and_context_manager():
    q, k, v = _qkv()
    with att.attention_backend("math"):
        att.attention(q, k, v)
        assert att.last_attention_backend() == "math"
        with att.set_attention_backend("sdpa"):
            att.attention(q, k, v)
            assert att.last_attention_backend() == "sdpa"
        att.attention(q, k, v)
        assert att.last_attention_backend() == "math"
    att.attention(q, k, v)
    assert att.last_attention_backend() == "sdpa"  # the default "auto" on CPU


def test_bad_inputs_are_refused():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend must be one of"):
        att.attention(q, k, v, backend="flash3")
    with pytest.raises(ValueError, match="b s h d"):
        att.attention(q[0], k, v)
    with pytest.raises(ValueError, match="bool"):
        att.attention(q, k, v, attn_mask=torch.ones(2, 3, 5, 7))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends_agree():
    q, k, v = (x.cuda().half() for x in _qkv(64, 64))
    ref = att.attention(q, k, v, backend="math").float()
    for backend in att.available_attention_backends("cuda"):
        out = att.attention(q, k, v, backend=backend)
        torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
