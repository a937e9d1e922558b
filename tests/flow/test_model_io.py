"""save_pretrained / load_generator / load_visibility: safetensors + config.json round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from trajloom.flow.config import generator_preset
from trajloom.flow.io import load_generator, load_visibility, save_pretrained
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: one thread is faster, and far faster on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _trained_like(module: torch.nn.Module) -> torch.nn.Module:
    # move every parameter off its initial value, so the round trip is not checked on inits
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module


def test_generator_round_trip(tmp_path):
    config = generator_preset("tiny", track_fusion="add_last", spatial_ctx_pool=2)
    model = _trained_like(TrajLoomGenerator(config)).eval()
    save_pretrained(model, tmp_path / "gen")
    payload = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert payload["kind"] == "trajloom-flow-generator" and payload["config"] == config.to_dict()
    loaded = load_generator(tmp_path / "gen")
    assert loaded.config == config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    gen = torch.Generator().manual_seed(1)
    shape = (2, config.fut_latent_frames, config.num_tokens, config.latent_channels)
    x = torch.randn(shape, generator=gen)
    cond = FlowCondition(torch.randn(shape, generator=gen))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 0.5, cond), model(x, 0.5, cond), rtol=0, atol=0)


def test_visibility_round_trip_and_kind_check(tmp_path):
    model = _trained_like(VisibilityPredictor(VisibilityConfig(use_hist_last=True, hidden=8)))
    save_pretrained(model, tmp_path / "vis")
    loaded = load_visibility(tmp_path / "vis")
    assert loaded.config == model.config
    z = torch.randn(1, 21, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, z), model(z, z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="load_generator / load_visibility"):
        load_generator(tmp_path / "vis")
    with pytest.raises(TypeError, match="TrajLoomGenerator or VisibilityPredictor"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_visibility(tmp_path / "nothing")


def test_weights_file_alone_is_enough_and_export_dtype(tmp_path):
    model = _trained_like(VisibilityPredictor(VisibilityConfig(hidden=8)))
    folder = save_pretrained(model, tmp_path / "vis", dtype=torch.bfloat16)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["config"]) == model.config.to_dict()
        assert f.get_tensor("in_proj.weight").dtype == torch.bfloat16
    (folder / "config.json").unlink()
    loaded = load_visibility(folder)
    expected = model.in_proj.weight.detach().to(torch.bfloat16).float()
    assert torch.equal(loaded.in_proj.weight, expected)
    assert load_visibility(folder, dtype=torch.bfloat16).in_proj.weight.dtype == torch.bfloat16
