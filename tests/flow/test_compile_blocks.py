"""Regional compilation (``compile_blocks``) keeps the function, the gradients and the keys.

Compiled with the ``aot_eager`` backend: dynamo traces every block and AOTAutograd splits
forward and backward, as on a GPU, without generating kernels (no C++ compiler needed).
"""

from __future__ import annotations

import pytest
import torch

from trajloom.flow.config import generator_preset
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.vae import TrajLoomVAE, vae_preset


def _generator_io(model: TrajLoomGenerator) -> tuple:
    c = model.config
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, c.fut_latent_frames, c.num_tokens, c.latent_channels, generator=g)
    cond = FlowCondition(
        z_hist=torch.randn(2, c.hist_latent_frames, c.num_tokens, c.latent_channels, generator=g),
        hist_vis=(torch.rand(2, c.hist_latent_frames, c.num_tokens, generator=g) > 0.3).float(),
    )
    return x, torch.tensor([0.3, 0.8]), cond


def _nonzero_head(model: torch.nn.Module) -> None:
    with torch.no_grad():  # the zero-initialised output head would make any model "equal"
        for p in model.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(0, 0.05)


@pytest.mark.slow  # ~70 s of CPU: dynamo traces every block, forward and backward
def test_generator_compile_blocks_same_output_gradients_and_keys() -> None:
    torch.manual_seed(0)
    eager = TrajLoomGenerator(generator_preset("tiny"))
    _nonzero_head(eager)
    compiled = TrajLoomGenerator(generator_preset("tiny"))
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks(backend="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x, t, cond = _generator_io(eager)
    outs, grads = [], []
    for model in (eager, compiled):
        v = model(x, t, cond)
        v.square().mean().backward()
        outs.append(v.detach())
        grads.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    assert outs[0].abs().max() > 0


@pytest.mark.slow
def test_vae_compile_blocks_same_posterior_and_keys() -> None:
    torch.manual_seed(0)
    eager = TrajLoomVAE(vae_preset("tiny")).eval()
    compiled = TrajLoomVAE(vae_preset("tiny")).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks(backend="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    cfg = eager.config
    tracks = torch.rand(2, cfg.num_frames, cfg.grid.num_points, 2) * 2 - 1
    with torch.no_grad():
        a, b = eager.encode_tracks(tracks).mean, compiled.encode_tracks(tracks).mean
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_compile_blocks_compiles_every_block_and_nothing_else() -> None:
    """The quick check of the wiring (the two slow tests above run the compiled code)."""
    gen = TrajLoomGenerator(generator_preset("tiny"))
    vae = TrajLoomVAE(vae_preset("tiny"))
    keys = (list(gen.state_dict()), list(vae.state_dict()))
    assert gen.compile_blocks(backend="aot_eager") is gen
    assert vae.compile_blocks(backend="aot_eager") is vae
    blocks = [*gen.blocks, *vae.encoder_blocks, *vae.decoder_blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
    others = [m for m in (*gen.modules(), *vae.modules()) if not any(m is b for b in blocks)]
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in others)
    assert (list(gen.state_dict()), list(vae.state_dict())) == keys
