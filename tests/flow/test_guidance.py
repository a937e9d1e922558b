"""Pins and guided sampling: no pins is bit-identical, pins are met, far points stay, errors."""

import json

import pytest
import torch

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.encoding import GridSpec, normalize
from trajloom.flow.config import generator_preset
from trajloom.flow.forecast import PipelineForecaster, with_pins
from trajloom.flow.guidance import (
    GuidanceConfig,
    anchored_velocity,
    grid_smoother,
    guided_velocity,
    hidden_loss,
    pin_loss,
)
from trajloom.flow.losses import flow_matching_loss
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.flow.pins import (
    Pin,
    PinError,
    check_pins,
    parse_pin,
    pin_targets,
    pins_from_json,
    pins_to_json,
    resolve_pins,
)
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.samplers import sample_dopri5, sample_euler, uniform_time_grid
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor, visibility_targets
from trajloom.vae import LatentStats, TrajLoomVAE, vae_preset

GRID = GridSpec(128, 96, 16)  # an 8 x 6 grid: 48 points
FRAMES = 9  # 3 latent steps


@pytest.fixture(scope="module")
def trained():
    """A tiny pipeline trained briefly on synthetic scenes, and held-out histories.

    The VAE learns the query-pixel reconstruction (a few dozen steps make its decoder a
    real, smooth map of the latents); the generator takes a few flow-matching steps.
    """
    torch.manual_seed(0)
    cfg = vae_preset(
        "tiny",
        grid=GRID,
        num_frames=FRAMES,
        hidden_size=32,
        num_heads=2,
        encoder_depth=2,
        decoder_depth=2,
        pos_embed_dim=8,
    )
    vae = TrajLoomVAE(cfg)
    tracks, vis = _scenes(6)
    train = normalize(tracks[:4].reshape(8, FRAMES, -1, 2), GRID)
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    for _ in range(30):
        loss = (vae.decode_query(vae.encode(train).mean) - train).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        z = vae.encode(train).mean
    stats = LatentStats(z.mean(dim=(0, 1, 2)), z.std(dim=(0, 1, 2)))
    zn = stats.normalize(z).reshape(4, 2, *z.shape[1:])
    gen = TrajLoomGenerator(
        generator_preset(
            "tiny", hidden_size=32, num_heads=2, depth=2, use_video_cond=False, use_text_cond=False
        ).for_vae(cfg)
    )
    opt = torch.optim.AdamW(gen.parameters(), lr=2e-3)
    cond = FlowCondition(z_hist=zn[:, 0])
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        fm = flow_matching_loss(lambda x, t: gen(x, t, cond), zn[:, 1], zn[:, 0], generator=g)
        opt.zero_grad()
        fm.loss.backward()
        opt.step()
    pipe = TrajLoomPipeline(vae, gen.eval(), stats)
    return pipe, tracks[4:, :FRAMES], vis[4:, :FRAMES]


def _scenes(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic scenes 0..count-1: tracks "b 2*FRAMES n 2" px, visibility "b 2*FRAMES n"."""
    scene_cfg = SceneConfig(128, 96, 16, num_frames=2 * FRAMES, render_frames=False)
    scenes = [make_scene(i, scene_cfg) for i in range(count)]
    tracks = torch.stack([torch.from_numpy(s.tracks) for s in scenes])
    return tracks, torch.stack([torch.from_numpy(s.visibility) for s in scenes])


@pytest.fixture(scope="module")
def with_head(trained):
    """The ``trained`` pipeline plus a visibility head trained on the same scenes' windows
    (history and future of scenes 0-3; BCE against the pooled visibility, as apps/train)."""
    pipe, hist, vis = trained
    torch.manual_seed(0)
    tracks, visible = _scenes(4)
    windows = tracks.reshape(8, FRAMES, -1, 2)
    with torch.no_grad():
        z = pipe.latent_stats.normalize(pipe.vae.encode_tracks(windows).mean)
    targets = visibility_targets(visible.reshape(8, FRAMES, -1), pipe.vae.config.frames_per_latent)
    head = VisibilityPredictor(VisibilityConfig(hidden=16, depth=2).for_vae(pipe.vae.config))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(z), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    piped = TrajLoomPipeline(pipe.vae, pipe.generator, pipe.latent_stats, visibility=head.eval())
    return piped, hist, vis


def _cells(point: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, w = torch.arange(GRID.num_points), GRID.grid_w
    return (n // w - point // w).abs(), (n % w - point % w).abs()


# ---------------------------------------------------------------- no pins: unchanged sampling
def test_no_pins_is_bit_identical(trained):
    pipe, hist, vis = trained
    for solver in ("euler", "dopri5"):
        base = pipe(hist, vis, num_samples=2, steps=4, seed=3, solver=solver)
        for constraints in (None, []):
            out = pipe(
                hist, vis, num_samples=2, steps=4, seed=3, solver=solver, constraints=constraints
            )
            assert torch.equal(out.latents, base.latents)
            assert torch.equal(out.tracks, base.tracks)
            assert torch.equal(out.visibility, base.visibility)
            assert out.nfe == base.nfe


def test_guided_velocity_without_loss_is_the_velocity_itself():
    def field(x, t):
        return -x

    assert guided_velocity(field, None, GuidanceConfig()) is field


# ---------------------------------------------------------------- the guidance, analytically
def test_guidance_lands_on_the_target_of_an_identity_decoder_with_both_samplers():
    """Zero velocity, loss ½|x - target|²: the Gauss–Newton step is exact, so Euler lands
    on the target; DOPRI5 solves dx/dt = (target - x) / (1 - t) up to t_end."""
    target = torch.tensor([[3.0, -2.0, 0.5]])
    x0 = torch.zeros(1, 3)

    def zero(x, t):
        return torch.zeros_like(x)

    def loss(x1):
        return 0.5 * (x1 - target).pow(2).sum(-1)

    cfg = GuidanceConfig(inner_steps=1, max_step=100.0, spread=0.0)
    v = guided_velocity(zero, loss, cfg)
    euler = sample_euler(v, x0, uniform_time_grid(5))
    torch.testing.assert_close(euler, target)
    dopri, _ = sample_dopri5(v, x0)
    # guidance stops at t_end = 0.999: the rest of the way is (1 - t_end) of the gap
    torch.testing.assert_close(dopri, target, atol=1e-2, rtol=0)
    half = guided_velocity(zero, loss, GuidanceConfig(strength=0.5, inner_steps=1, spread=0.0))
    one_step = sample_euler(half, x0, uniform_time_grid(1))
    torch.testing.assert_close(one_step, 0.5 * target)


def test_grid_smoother_is_a_gaussian_over_grid_cells():
    smooth = grid_smoother(GRID, 1.0)
    g = torch.zeros(1, 1, GRID.num_points, 1)
    g[0, 0, 9] = 1.0  # row 1, column 1
    out = smooth(g)[0, 0, :, 0]
    dr, dc = _cells(9)
    torch.testing.assert_close(out, torch.exp(-(dr**2 + dc**2).float() / 2))
    assert grid_smoother(GRID, 0.0) is None


# ---------------------------------------------------------------- pins on a trained model
def test_pin_is_met_and_far_points_stay(trained):
    """Pin point 9 (row 1, column 1) 10 px away from where the unguided sample puts it.

    Stated tolerances: the pin within 1 px; points 4 or more cells away within 1 px of
    the unguided sample; the 8 neighbours follow the pin (mean move along the pin's
    displacement at least a third of it) instead of tearing away.
    """
    pipe, hist, vis = trained
    point, frame = 9, 6
    free = pipe(hist[0], vis[0], steps=8, seed=0)
    start = free.tracks[0, 0, frame, point]
    shift = torch.tensor([10.0, 6.0]) / torch.tensor([10.0, 6.0]).norm() * 10.0
    target = tuple((start + shift).tolist())
    pin = Pin(frames=(frame,), targets=(target,), point=point)
    out = pipe(hist[0], vis[0], steps=8, seed=0, constraints=[pin])
    assert float((out.tracks[0, 0, frame, point] - torch.tensor(target)).norm()) < 1.0
    move = (out.tracks - free.tracks)[0, 0]  # "t n 2"
    dr, dc = _cells(point)
    far = torch.maximum(dr, dc) >= 4
    assert float(move[:, far].norm(dim=-1).max()) < 1.0
    near = torch.maximum(dr, dc) == 1
    along = (move[frame, near] @ shift) / shift.norm()
    assert float(along.mean()) > shift.norm() / 3


def test_without_spread_the_neighbours_do_not_follow(trained):
    """The reason for the grid smoother, measured: with spread 0 only the pinned point moves."""
    pipe, hist, vis = trained
    point, frame = 9, 6
    free = pipe(hist[0], vis[0], steps=8, seed=0)
    target = tuple((free.tracks[0, 0, frame, point] + torch.tensor([8.0, 0.0])).tolist())
    pin = Pin(frames=(frame,), targets=(target,), point=point)
    out = pipe(
        hist[0], vis[0], steps=8, seed=0, constraints=[pin], guidance=GuidanceConfig(spread=0.0)
    )
    assert float((out.tracks[0, 0, frame, point] - torch.tensor(target)).norm()) < 1.0
    dr, dc = _cells(point)
    near = torch.maximum(dr, dc) == 1
    assert float((out.tracks - free.tracks)[0, 0, frame, near, 0].mean()) < 8.0 / 3


def test_path_pin_and_outside_pin(trained):
    """A three-frame path met within 2 px at each frame (4 inner steps: several residuals make
    one Gauss–Newton-along-the-gradient step inexact), with an "outside" pin beside it."""
    pipe, hist, vis = trained
    free = pipe(hist[0], vis[0], steps=8, seed=0)
    p = free.tracks[0, 0, :, 20]
    path = Pin(frames=(2, 5, 8), targets=tuple((p[f] + 6.0).tolist() for f in (2, 5, 8)), point=20)
    leave = Pin(frames=(8,), point=40, kind="outside")  # row 5: the bottom row
    four = GuidanceConfig(inner_steps=4)
    out = pipe(hist[0], vis[0], steps=8, seed=0, constraints=[path, leave], guidance=four)
    for f in (2, 5, 8):
        assert float((out.tracks[0, 0, f, 20] - (p[f] + 6.0)).norm()) < 2.0
        assert bool(out.visibility[0, 0, f, 20])
    assert not bool(out.visibility[0, 0, 8, 40])  # outside the image: invisible (released rule)


def test_pins_per_clip_and_per_sample_rows(trained):
    pipe, hist, vis = trained
    free = pipe(hist, vis, steps=6, seed=0, num_samples=2)
    targets = [tuple((free.tracks[i, 0, 4, 30] + 5.0).tolist()) for i in range(2)]
    pins = [[Pin(frames=(4,), targets=(targets[i],), point=30)] for i in range(2)]
    out = pipe(hist, vis, steps=6, seed=0, num_samples=2, constraints=pins)
    for i in range(2):
        err = (out.tracks[i, 0, 4, 30] - torch.tensor(targets[i])).norm()
        assert float(err) < 1.0
    with pytest.raises(PinError, match="3 lists of pins for 2 clips"):
        pipe(hist, vis, steps=2, constraints=pins + pins[:1])


# ---------------------------------------------------------------- the constraint type
def test_bad_pins_are_refused_with_clear_errors():
    with pytest.raises(PinError, match=r"unknown point 48; .*points 0\.\.47"):
        check_pins([Pin(frames=(0,), targets=((1.0, 1.0),), point=48)], GRID, FRAMES)
    with pytest.raises(PinError, match=r"frame 9 is outside the future window 0\.\.8"):
        check_pins([Pin(frames=(9,), targets=((1.0, 1.0),), point=0)], GRID, FRAMES)
    with pytest.raises(PinError, match=r"target \(200\.0, 1\.0\) is outside the image"):
        check_pins([Pin(frames=(0,), targets=((200.0, 1.0),), point=0)], GRID, FRAMES)
    with pytest.raises(PinError, match="exactly one"):
        Pin(frames=(0,), targets=((1.0, 1.0),), point=1, source=(1.0, 1.0))
    with pytest.raises(PinError, match=r"2 frame.*1 target"):
        Pin(frames=(0, 1), targets=((1.0, 1.0),), point=1)
    with pytest.raises(PinError, match="frames repeat"):
        Pin(frames=(3, 3), targets=((1.0, 1.0), (2.0, 2.0)), point=1)
    with pytest.raises(PinError, match="weight must be > 0"):
        Pin(frames=(0,), targets=((1.0, 1.0),), point=1, weight=0.0)
    with pytest.raises(PinError, match="kind must be one of"):
        Pin(frames=(0,), point=1, kind="hover")
    with pytest.raises(PinError, match="finite numbers"):
        Pin(frames=(0,), targets=((float("nan"), 1.0),), point=1)
    with pytest.raises(PinError, match="expected N,FRAME,X,Y"):
        parse_pin("3,4,5")
    with pytest.raises(PinError, match="must be integers"):
        parse_pin("a,4,5,6")
    with pytest.raises(PinError, match=r"pins\[1\]: unknown key\(s\) \['tgt'\]"):
        pins_from_json([{"point": 1, "frame": 0, "target": [1, 1]}, {"point": 1, "tgt": 3}])


def test_bad_pins_are_refused_by_the_pipeline(trained):
    pipe, hist, vis = trained
    with pytest.raises(PinError, match="outside the future window"):
        pipe(hist[0], vis[0], steps=2, constraints=[parse_pin("0,99,10,10")])


def test_parse_and_json_round_trip(tmp_path):
    pin = parse_pin(" 17, 40, 300.5, 200 ")
    assert pin == Pin(frames=(40,), targets=((300.5, 200.0),), point=17)
    pins = [
        pin,
        Pin(frames=(2, 4), targets=((1.0, 2.0), (3.0, 4.0)), source=(10.0, 20.0), weight=2.0),
        Pin(frames=(8,), point=5, kind="outside"),
        Pin(frames=(3, 4, 5), point=6, kind="hidden", weight=0.5),
    ]
    path = tmp_path / "pins.json"
    path.write_text(json.dumps(pins_to_json(pins)))
    assert pins_from_json(path) == pins
    short = pins_from_json({"pins": [{"point": 17, "frame": 40, "target": [300.5, 200]}]})
    assert short == [pin]
    with pytest.raises(PinError, match="not found"):
        pins_from_json(tmp_path / "missing.json")


def test_source_pixel_resolves_to_the_nearest_visible_point():
    boundary = torch.tensor([[0.0, 0.0], [16.0, 0.0], [32.0, 0.0]])
    vis = torch.tensor([True, False, True])
    grid = GridSpec(48, 16, 16)
    pin = Pin(frames=(0,), targets=((5.0, 5.0),), source=(17.0, 1.0))
    (resolved,) = resolve_pins([pin], boundary, vis, grid)
    assert resolved.point in (0, 2) and resolved.point == 2  # 1 is hidden; 2 is nearer than 0
    with pytest.raises(PinError, match="no visible grid point within 16 px"):
        resolve_pins([pin], boundary, torch.zeros(3, dtype=torch.bool), grid)


def test_pin_loss_is_half_the_weighted_squared_pixel_error():
    tracks = torch.zeros(2, 3, 4, 2)
    tracks[1, 2, 3] = torch.tensor([5.0, 7.0])
    targets = pin_targets([[], [Pin(frames=(2,), targets=((2.0, 3.0),), point=3, weight=2.0)]])
    loss = pin_loss(lambda z: z, targets, GridSpec(32, 32, 16))
    torch.testing.assert_close(loss(tracks), torch.tensor([0.0, 0.5 * 2.0 * (9 + 16)]))
    assert pin_loss(lambda z: z, pin_targets([[]]), GRID) is None


def test_guidance_config_is_validated():
    bad_configs = (
        {"strength": 0.0},
        {"inner_steps": 0},
        {"schedule": "warm"},
        {"spread": -1.0},
        {"keep": -1.0},
    )
    for bad in bad_configs:
        with pytest.raises(ValueError, match="GuidanceConfig"):
            GuidanceConfig(**bad)
    assert GuidanceConfig(schedule="ramp").strength_at(0.25) == 0.25
    assert GuidanceConfig().strength_at(0.9995) == 0.0


# ---------------------------------------------------------------- "hidden" pins
def test_hidden_guidance_puts_a_linear_logit_on_its_margin_and_the_point_inside():
    """Zero velocity; a linear head (logit = 4 z2 - 1) and an identity decoder (px = z0, z1).
    One residual per row, so the Gauss–Newton step is exact: Euler lands with the logit on
    ``logit(0.5) - 2 = -2`` (row 0, visible at 3) or the point 2 px inside (row 1, at x = -3).
    The position-keeping term does not touch row 0 (its logit moves along z2, which the
    decoder does not read)."""
    grid = GridSpec(32, 32, 16)
    x0 = torch.tensor([[10.0, 10.0, 1.0], [-3.0, 10.0, -1.0]]).view(2, 1, 1, 3)
    pins = pin_targets([[Pin(frames=(0,), point=0, kind="hidden")]] * 2)
    cfg = GuidanceConfig(inner_steps=1, max_step=100.0, spread=0.0)
    expected = torch.tensor([[10.0, 10.0, -0.25], [2.0, 10.0, -1.0]]).view(2, 1, 1, 3)
    for keep in (0.0, 1.0):
        loss_from = hidden_loss(
            lambda z: 4 * z[..., 2] - 1, lambda z: z[..., :2], pins, grid, keep=keep
        )
        assert loss_from is not None
        v = anchored_velocity(lambda x, t: torch.zeros_like(x), loss_from, cfg)
        out = sample_euler(v, x0, uniform_time_grid(4))
        rows = slice(None) if keep == 0 else slice(0, 1)
        torch.testing.assert_close(out[rows], expected[rows])
        torch.testing.assert_close(loss_from(out)(out)[rows], torch.zeros(2)[rows])
    assert hidden_loss(lambda z: z, lambda z: z, pin_targets([[]]), grid) is None


def test_pin_loss_and_hidden_loss_split_the_pins():
    """An "at" pin is pin_loss's alone; a hidden pin is hidden_loss's alone."""
    tracks = torch.zeros(1, 3, 4, 2)
    at = Pin(frames=(2,), targets=((2.0, 3.0),), point=3)
    hidden = Pin(frames=(1,), point=2, kind="hidden")
    both = pin_targets([[at, hidden]])
    grid = GridSpec(32, 32, 16)
    torch.testing.assert_close(pin_loss(lambda z: z, both, grid)(tracks), torch.tensor([6.5]))
    assert pin_loss(lambda z: z, pin_targets([[hidden]]), grid) is None
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = 1.0  # 3 above the ceiling -2; the point (0, 0) is 2 px from 2 px inside
    hl = hidden_loss(lambda z: logits, lambda z: z, both, grid)
    assert hl is not None
    torch.testing.assert_close(hl(tracks)(tracks), torch.tensor([0.5 * (9.0 + 4.0)]))
    moved = tracks + 1.0  # every coordinate 1 px off the reference: keep adds ½ · 24
    torch.testing.assert_close(hl(tracks)(moved), torch.tensor([0.5 * (9.0 + 1.0 + 24.0)]))
    torch.testing.assert_close(both.visible, torch.tensor([True, False]))


def test_hidden_pin_is_predicted_invisible_inside_the_image_and_far_points_stay(with_head):
    """Hide point 20 (row 2, column 4) at frames 5 and 6, where the unguided head says visible.

    Stated tolerances: the head's probability below the 0.5 threshold at both frames (the
    guidance aims at 0.12 = sigmoid(-2)); the decoded point inside the image there and within
    4 px of the unguided sample (2.4 px when written; 3.7 px without the position-keeping
    term); points 3 or more cells away within 0.5 px and 0.05 of probability of it.
    """
    pipe, hist, vis = with_head
    point, frames = 20, [5, 6]
    free = pipe(hist[0], vis[0], steps=8, seed=0)
    assert bool((free.visibility_prob[0, 0, frames, point] > 0.5).all()), "fixture: visible"
    pin = Pin(frames=frames, point=point, kind="hidden")
    out = pipe(hist[0], vis[0], steps=8, seed=0, constraints=[pin])
    assert bool((out.visibility_prob[0, 0, frames, point] < 0.5).all())
    assert not bool(out.visibility[0, 0, frames, point].any())
    raw = pipe.decode_points(out.latents[0])[0, frames, point]  # unclamped pixels
    assert bool(((raw >= 0) & (raw <= torch.tensor([GRID.width - 1, GRID.height - 1]))).all())
    dr, dc = _cells(point)
    far = torch.maximum(dr, dc) >= 3
    move = (out.tracks - free.tracks)[0, 0].norm(dim=-1)  # "t n"
    assert float(move[frames, point].max()) < 4.0
    assert float(move[:, far].max()) < 0.5
    dprob = (out.visibility_prob - free.visibility_prob)[0, 0].abs()
    assert float(dprob[:, far].max()) < 0.05


def test_hidden_pins_beside_an_at_pin(with_head):
    """Both kinds in one sample: the "at" pin within 1 px, both hidden points predicted
    invisible. (This tiny model meets both with one shared step too; the gain of steering
    each hidden point on its own is measured on the quick set, BENCHMARKS.md "Pins".)"""
    pipe, hist, vis = with_head
    free = pipe(hist[0], vis[0], steps=8, seed=0)
    target = tuple((free.tracks[0, 0, 6, 9] + torch.tensor([6.0, 0.0])).tolist())
    pins = [
        Pin(frames=(6,), targets=(target,), point=9),
        Pin(frames=(4,), point=30, kind="hidden"),
        Pin(frames=(7, 8), point=44, kind="hidden"),
    ]
    out = pipe(hist[0], vis[0], steps=8, seed=0, constraints=pins)
    assert float((out.tracks[0, 0, 6, 9] - torch.tensor(target)).norm()) < 1.0
    assert float(out.visibility_prob[0, 0, 4, 30]) < 0.5
    assert bool((out.visibility_prob[0, 0, [7, 8], 44] < 0.5).all())


def test_hidden_groups_hold_one_point_per_row_with_all_its_frames():
    at = Pin(frames=(1,), targets=((1.0, 1.0),), point=0)
    a = Pin(frames=(2, 3), point=5, kind="hidden")
    b = Pin(frames=(4,), point=6, kind="hidden")
    targets = pin_targets([[at, a, b], [b]])
    groups = targets.hidden_groups()
    assert [g.row.tolist() for g in groups] == [[0, 0, 1], [0]]
    assert [g.point.tolist() for g in groups] == [[5, 5, 6], [6]]
    assert [g.frame.tolist() for g in groups] == [[2, 3, 4], [4]]
    assert all(bool(g.hidden.all()) for g in groups)
    assert pin_targets([[at]]).hidden_groups() == []


def test_bad_hidden_pins_are_refused(trained):
    pipe, hist, vis = trained  # no visibility head
    hidden = Pin(frames=(3,), point=7, kind="hidden")
    with pytest.raises(PinError, match=r"pin \(point 7, frame 3\): a 'hidden' pin needs a visib"):
        pipe(hist[0], vis[0], steps=2, constraints=[hidden])
    forecaster = PipelineForecaster(pipe, solver="euler", steps=2, origin="test")
    with pytest.raises(PinError, match="needs a visibility head"):
        with_pins(forecaster, [hidden])
    with pytest.raises(PinError, match="a 'hidden' pin takes no targets"):
        Pin(frames=(3,), targets=((1.0, 1.0),), point=7, kind="hidden")
    with pytest.raises(PinError, match=r"frame 9 is outside the future window 0\.\.8"):
        check_pins([Pin(frames=(9,), point=0, kind="hidden")], GRID, FRAMES)
    with pytest.raises(PinError, match="N,FRAME,KIND with KIND one of outside, hidden"):
        parse_pin("3,4,hover")
    assert parse_pin("3, 4, hidden") == Pin(frames=(4,), point=3, kind="hidden")
    assert parse_pin("3,4,outside") == Pin(frames=(4,), point=3, kind="outside")
