"""apps/train: recipes, overrides, run-folder compatibility, bad input refused before training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trajloom_train.checkpoint import (
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from trajloom_train.cli import RunOptions, resolve_run
from trajloom_train.config import (
    OptimConfig,
    apply_overrides,
    recipe_from_dict,
    recipe_to_dict,
    scale_steps,
)
from trajloom_train.data import EVAL, TRAIN, VAL, SyntheticSplit
from trajloom_train.recipes import RECIPES, get_recipe, paper, quick
from trajloom_train.trainer import lr_at

MAIN = Path(__file__).resolve().parents[2] / "apps" / "train" / "__main__.py"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_json_round_trip(name):
    recipe = get_recipe(name)
    assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_models_share_one_geometry(name):
    r = get_recipe(name)
    assert (
        r.generator.num_tokens
        == r.vae_model.num_tokens
        == r.data.width * r.data.height // r.data.stride**2
    )
    assert r.generator.fut_latent_frames == r.vae_model.latent_frames
    assert (
        r.generator.latent_channels
        == r.vae_model.latent_channels
        == r.visibility_model.latent_channels
    )


def test_paper_recipe_values_from_the_sources():
    r = paper()
    # paper A.2 + released generator config
    assert (r.flow.steps, r.flow.batch_size, r.flow.micro_batch_size) == (100_000, 128, 32)
    assert r.flow.optim.lr == 6e-5 and r.flow.optim.weight_decay == 0.0
    assert r.flow.optim.clip_grad_norm == 1.0 and r.precision == "bf16"
    assert r.activation_checkpointing and r.generator.activation_checkpointing
    # released VAE and visibility configs
    assert r.vae.optim.lr == 2e-5 and r.vae_loss.velocity_weight == 0.1
    assert r.vae_loss.neighbor_weight == 0.2 and r.vae_loss.beta == 5e-5
    assert r.vis.optim.lr == 3e-4 and r.vis.steps == 20_000 and r.vis.optim.min_lr == 3e-5
    assert r.onpolicy_loss.sub_batch == 8
    assert (r.data.width, r.data.height, r.data.history) == (832, 480, 81)
    assert r.generator.num_tokens == 390 and r.vae_model.latent_frames == 21


def test_override_types_and_derived_shapes():
    r = apply_overrides(
        quick(),
        [
            "flow.optim.lr=3e-4",
            "data.width=128",
            "flow.steps=7",
            "vis_train.segments=fut",
            "flow_loss.anchor=false",
        ],
    )
    assert r.flow.optim.lr == 3e-4 and r.flow.steps == 7
    assert r.vis_train.segments == ("fut",) and r.flow_loss.anchor is False
    assert r.vae_model.grid.width == r.generator.grid.width == 128


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("flow.lr=3", "unknown override key"),
        ("nonsense=1", "unknown override key"),
        ("flow.steps=many", "cannot parse"),
        ("flow.steps=-1", "positive int"),
        ("generator.input_width=64", "derived"),
        ("flow.steps", "key=value"),
        ("data.width=100", "multiple of stride"),
        ("vae.micro_batch_size=3", "multiple of vae.micro_batch_size"),
        ("vae.optim.lr=inf", "not a finite number"),
        ("flow_loss.sigma=nan", "not a finite number"),
        ("vae.optim.betas=0.9,inf", "not a finite number"),
    ],
)
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(quick(), [override])


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("fast")


def test_steps_scale():
    r = scale_steps(quick(), 0.1)
    assert r.flow.steps == round(quick().flow.steps * 0.1)
    assert r.vae.optim.warmup_steps == round(quick().vae.optim.warmup_steps * 0.1)


def test_lr_schedule():
    opt = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr=0.1)
    assert lr_at(0, opt, 110) == pytest.approx(0.1)
    assert lr_at(9, opt, 110) == pytest.approx(1.0)
    assert lr_at(60, opt, 110) == pytest.approx(0.55)
    assert lr_at(110, opt, 110) == pytest.approx(0.1)


def test_resume_with_another_config_is_refused(tmp_path):
    recipe, run_dir = resolve_run(RunOptions("ci", "a", tmp_path))
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(recipe_to_dict(recipe)))
    # the saved config is picked up without --recipe; logging cadence may change
    cadence = ("flow.log_every=1", "vae.micro_batch_size=4")
    again, _ = resolve_run(RunOptions(None, "a", tmp_path, cadence))
    assert again.flow.steps == recipe.flow.steps
    with pytest.raises(ValueError, match=r"another config(.|\n)*flow.optim.lr"):
        resolve_run(RunOptions(None, "a", tmp_path, ("flow.optim.lr=0.5",)))
    with pytest.raises(ValueError, match="another config"):
        resolve_run(RunOptions("quick", "a", tmp_path))


def test_synthetic_splits_are_disjoint_and_deterministic():
    data = get_recipe("ci").data
    train = SyntheticSplit(data, 0, TRAIN)
    seeds = {
        split: {SyntheticSplit(data, 0, split).seed_of(g) for g in range(200)}
        for split in (TRAIN, VAL, EVAL)
    }
    assert not (seeds[TRAIN] & seeds[VAL]) and not (seeds[TRAIN] & seeds[EVAL])
    assert not (seeds[VAL] & seeds[EVAL])
    # a pool of P scenes: every pass visits each scene once
    first_pass = {train.scene_index(g) for g in range(data.scene_pool)}
    assert first_pass == set(range(data.scene_pool))
    a, b = train.batch([3, 5]), SyntheticSplit(data, 0, TRAIN).batch([3, 5])
    assert torch.equal(a.hist_tracks, b.hist_tracks) and torch.equal(a.fut_vis, b.fut_vis)


def test_checkpoints_are_atomic_kept_and_weights_only(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.manual_seed(3)
    rng = capture_rng()
    expected = torch.rand(4)
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, state, None, {"rng": rng, "optimizer": {}}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000030", "step-00000040"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))  # torch.load(weights_only=True) inside
    assert ckpt.step == 40 and torch.equal(ckpt.model["w"], state["w"]) and ckpt.ema is None
    restore_rng(ckpt.train_state["rng"])
    assert torch.equal(torch.rand(4), expected)


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(MAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_bad_input_fails_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["all", "--recipe", "nope"], "unknown recipe"),
        (["vae", "--recipe", "ci", "--set", "vae.lr=1"], "unknown override key"),
        (["all", "--recipe", "ci", "--data", str(empty)], "shard"),
        (["flow", "--recipe", "ci", "--name", "fresh"], "needs the finished 'vae' stage"),
    ]
    for args, message in cases:
        result = _cli(*args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").glob("*/*/checkpoints"))


@pytest.mark.parametrize(
    ("override", "new_key"),
    [
        ("vae_model.width=64", "vae_model.grid.width"),
        ("generator.patch_size=16", "generator.grid.stride"),
        ("generator.num_frames_in=9", "generator.num_frames"),
        ("generator.latent_time_stride=2", "generator.temporal_factor"),
    ],
)
def test_previous_geometry_keys_are_refused_naming_the_new_key(override, new_key):
    with pytest.raises(ValueError, match=r"derived.*data\.width") as info:
        apply_overrides(quick(), [override])
    assert f"(now {new_key!r})" in str(info.value)
    with pytest.raises(ValueError, match="derived"):
        apply_overrides(quick(), [f"{new_key}=8"])


def test_geometry_is_said_once():
    from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY
    from trajloom_train.config import DataConfig

    r = paper()
    assert r.data.grid == r.vae_model.grid == r.generator.grid == DEFAULT_GRID
    assert (r.data.history, r.data.future) == (DEFAULT_HISTORY, DEFAULT_FUTURE)
    assert r.vae_model.num_frames == r.generator.num_frames == DEFAULT_HISTORY
    assert r.visibility_model.temporal_factor == r.generator.temporal_factor == 4
    assert DataConfig().grid == DEFAULT_GRID and DataConfig().windows.total == 162
    # temporal_factor is the VAE's; the generator and the visibility head follow it
    r = apply_overrides(quick(), ["vae_model.temporal_factor=8"])
    assert r.generator.temporal_factor == r.visibility_model.temporal_factor == 8
    assert r.generator.hist_latent_frames == r.vae_model.latent_frames == 3


def test_run_config_in_the_previous_layout_loads_and_compares_equal():
    from trajloom_train.config import config_diff

    saved = recipe_to_dict(quick())
    vae = saved["vae_model"]
    vae.update(vae.pop("grid"))  # width/height/stride at the top, as saved before
    gen = saved["generator"]
    grid = gen.pop("grid")
    gen.update(
        input_width=grid["width"],
        input_height=grid["height"],
        patch_size=grid["stride"],
        num_frames_in=gen.pop("num_frames"),
        latent_time_stride=gen.pop("temporal_factor"),
        hist_latent_frames=5,
        fut_latent_frames=5,
    )
    assert recipe_from_dict(saved) == quick()
    assert config_diff(saved, recipe_to_dict(quick())) == []


def test_data_dynamics_selects_the_synthetic_world():
    from trajloom.data.synthetic import SceneConfig
    from trajloom_train.config import DataConfig
    from trajloom_train.data import scene_config

    assert quick().data.dynamics == "lively" and paper().data.dynamics == "rigid"
    cfg = scene_config(quick().data)
    assert cfg == SceneConfig.preset(
        "lively",
        **{
            k: getattr(cfg, k)
            for k in (
                "width",
                "height",
                "stride",
                "num_frames",
                "min_objects",
                "max_objects",
                "render_frames",
            )
        },
    )
    assert scene_config(DataConfig(dynamics="rigid")).p_swing == 0.0
    with pytest.raises(ValueError, match=r"data\.dynamics must be one of"):
        DataConfig(dynamics="wobbly")
    with pytest.raises(ValueError, match=r"data\.dynamics"):
        apply_overrides(quick(), ["data.dynamics=wobbly"])
