"""Flow-matching objective: zero at the true velocity, weights, time mixture, overfitting."""

import pytest
import torch
from torch import nn

from trajloom.flow.losses import (
    FlowLossConfig,
    draw_flow_inputs,
    flow_matching_loss,
    flow_matching_terms,
    sample_flow_time,
    token_weights,
    weighted_token_mse,
)
from trajloom.flow.path import draw_source
from trajloom.flow.samplers import sample_euler, uniform_time_grid


def _latents(b=2, t=5, n=6, c=3, seed=0):
    return torch.randn(b, t, n, c, generator=torch.Generator().manual_seed(seed))


def test_loss_is_zero_for_the_true_conditional_velocity():
    x1, z_hist = _latents(seed=1), _latents(t=4, seed=2)
    vis = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(3)) > 0.5

    def true_velocity(x, t):  # the straight line through (x_t, t) that ends at x1
        return (x1 - x) / (1 - t.view(-1, 1, 1, 1))

    out = flow_matching_loss(
        true_velocity,
        x1,
        z_hist,
        token_vis=vis.float(),
        generator=torch.Generator().manual_seed(0),
        config=FlowLossConfig(sigma=0.0),
    )
    assert float(out.loss) < 1e-10
    torch.testing.assert_close(out.target, x1 - out.x0)
    # the source is anchored on the last history latent
    assert (out.x0[:, 0] - z_hist[:, -1]).abs().max() < 1.0


def test_loss_of_a_wrong_velocity_is_its_weighted_error():
    x1, z_hist = _latents(seed=1), _latents(t=4, seed=2)
    out = flow_matching_loss(
        lambda x, t: torch.zeros_like(x),
        x1,
        z_hist,
        generator=torch.Generator().manual_seed(0),
        config=FlowLossConfig(use_visibility_weights=False),
    )
    torch.testing.assert_close(out.loss, out.target.pow(2).mean())


def test_token_weights_and_weighted_mse_by_hand():
    vis = torch.tensor([[[1.0, 0.0]]])  # b=1, t=1, n=2
    w = token_weights(vis, 0.01)
    torch.testing.assert_close(w, torch.tensor([[[1.0, 0.01]]]))
    pred = torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]]])  # c=2
    target = torch.zeros_like(pred)
    # token errors: mean_c = 1 and 2; weighted: (1 * 1 + 0.01 * 2) / 1.01
    assert float(weighted_token_mse(pred, target, w)) == pytest.approx(1.02 / 1.01)
    assert float(weighted_token_mse(pred, target)) == pytest.approx(1.5)


def test_invisible_tokens_barely_count():
    pred, target = _latents(seed=1), _latents(seed=2)
    vis = torch.ones(2, 5, 6)
    vis[:, :, 0] = 0
    base = weighted_token_mse(pred, target, token_weights(vis))
    moved = target.clone()
    moved[:, :, 0] += 100.0  # large error on invisible tokens only
    hit = weighted_token_mse(pred, moved, token_weights(vis))
    hit_unweighted = weighted_token_mse(pred, moved)
    # normalized weights: the invisible share moves the loss by 0.01 * (60 tokens / Σw = 50.1)
    # times what it moves the unweighted mean
    ratio = float(hit - base) / float(hit_unweighted - weighted_token_mse(pred, target))
    assert ratio == pytest.approx(0.01 * 60 / 50.1, rel=1e-3)


def test_flow_time_mixture():
    g = torch.Generator().manual_seed(0)
    t = sample_flow_time(200_000, generator=g, t_small_prob=0.2, t_small_max=0.1)
    lo, hi = torch.tensor(1e-5), torch.tensor(1 - 1e-5)
    assert bool((t >= lo).all()) and bool((t <= hi).all())
    # P(t < 0.1) = 0.2 + 0.8 * P(sigmoid(N) < 0.1) = 0.2 + 0.8 * Phi(logit(0.1))
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = 0.2 + 0.8 * float(normal.cdf(torch.logit(torch.tensor(0.1))))
    assert float((t < 0.1).float().mean()) == pytest.approx(expected, abs=0.005)
    only_small = sample_flow_time(1000, generator=g, t_small_prob=1.0, t_small_max=0.1)
    assert float(only_small.max()) <= 0.1
    logit_only = sample_flow_time(200_000, generator=g, t_small_prob=0.0)
    assert float(logit_only.median()) == pytest.approx(0.5, abs=0.01)


def test_from_released_train_section():
    cfg = FlowLossConfig.from_released(
        {
            "x0_mode": "anchor_first",
            "x0_noise_std": 0.1,
            "fm_use_vis_mask": True,
            "fm_invis_weight": 0.01,
            "fm_sigma": 0.05,
            "t_small_prob": 0.2,
            "t_small_max": 0.1,
            "learning_rate": 6e-5,
        }
    )
    assert cfg == FlowLossConfig()
    assert not FlowLossConfig.from_released({"x0_mode": "noise"}).anchor
    assert FlowLossConfig.from_dict(cfg.to_dict()) == cfg


def test_anchoring_switch_changes_only_the_source():
    x1, z_hist = _latents(seed=1), _latents(t=4, seed=2) + 10.0
    outs = {
        a: flow_matching_loss(
            lambda x, t: torch.zeros_like(x),
            x1,
            z_hist,
            generator=torch.Generator().manual_seed(0),
            config=FlowLossConfig(anchor=a),
        )
        for a in (True, False)
    }
    assert (outs[True].x0[:, 0] - z_hist[:, -1]).abs().max() < 1.0
    assert (outs[False].x0[:, 0] - z_hist[:, -1]).abs().min() > 3.0
    assert torch.equal(outs[True].x0[:, 1:], outs[False].x0[:, 1:])


class _TinyVelocity(nn.Module):
    """A small MLP over the flattened latent state and t: a generator for one fixed history."""

    def __init__(self, dim: int, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, dim),
        )

    def forward(self, x, t):
        flat = torch.cat([x.flatten(1), t.view(-1, 1)], dim=1)
        return self.net(flat).view_as(x)


def test_tiny_generator_overfits_one_batch():
    torch.manual_seed(0)
    x1 = _latents(b=1, t=3, n=4, c=2, seed=1).expand(16, -1, -1, -1)
    z_hist = _latents(b=1, t=2, n=4, c=2, seed=2).expand(16, -1, -1, -1)
    model = _TinyVelocity(3 * 4 * 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(250):
        out = flow_matching_loss(model, x1, z_hist, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-20:]) / 20 < 0.1 * sum(losses[:20]) / 20
    x0 = draw_source(z_hist, 3, generator=torch.Generator().manual_seed(99))
    sample = sample_euler(lambda x, t: model(x, t), x0, uniform_time_grid(20))
    assert float((sample - x1).abs().mean()) < 0.2 * float((x0 - x1).abs().mean())


def test_tiny_trajloom_generator_overfits_one_batch():
    from trajloom.flow.config import generator_preset
    from trajloom.flow.model import FlowCondition, TrajLoomGenerator

    torch.manual_seed(0)
    cfg = generator_preset("tiny", depth=2, hidden_size=32, num_heads=2)
    model = TrajLoomGenerator(cfg)
    shape = (2, cfg.fut_latent_frames, cfg.num_tokens, cfg.latent_channels)
    x1 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    z_hist = torch.randn(
        (2, cfg.hist_latent_frames, cfg.num_tokens, cfg.latent_channels),
        generator=torch.Generator().manual_seed(2),
    )
    cond = FlowCondition(z_hist=z_hist)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(120):
        out = flow_matching_loss(lambda x, t: model(x, t, cond), x1, z_hist, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_token_squared_error_is_the_numerator_of_the_weighted_mse():
    from trajloom.flow.losses import token_squared_error, weighted_token_mse

    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    w = torch.rand(2, 3, 4, generator=g)
    per_token = token_squared_error(pred, target)
    assert per_token.shape == (2, 3, 4)
    assert torch.allclose(per_token[1, 2, 3], ((pred - target)[1, 2, 3] ** 2).mean())
    assert torch.allclose(weighted_token_mse(pred, target, w), (w * per_token).sum() / w.sum())


def test_per_sample_draws_do_not_depend_on_the_batch():
    z_hist, cfg = _latents(b=3, t=4, seed=4), FlowLossConfig()
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    batch = draw_flow_inputs(z_hist, 5, config=cfg, generators=gens)
    alone = draw_flow_inputs(
        z_hist[1:2], 5, config=cfg, generator=torch.Generator().manual_seed(11)
    )
    assert torch.equal(batch.x0[1:2], alone.x0) and torch.equal(batch.t[1:2], alone.t)
    assert torch.equal(batch.tube[1:2], alone.tube)
    # the anchored first step sits on the last history latent
    assert (batch.x0[:, 0] - z_hist[:, -1]).abs().max() < 1.0
    no_tube = draw_flow_inputs(z_hist, 5, config=FlowLossConfig(sigma=0.0), generators=gens)
    assert no_tube.tube is None
    with pytest.raises(ValueError, match="one per sample"):
        draw_flow_inputs(z_hist, 5, generators=gens[:2])


def test_terms_split_the_loss_into_sums_that_add_up_over_micro_batches():
    x1, z_hist = _latents(b=4, seed=5), _latents(b=4, t=4, seed=6)
    vis = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(7)) > 0.4
    draws = draw_flow_inputs(z_hist, 5, generator=torch.Generator().manual_seed(8))

    def velocity(x, t):
        return 0.5 * x

    whole = flow_matching_terms(velocity, x1, draws, token_vis=vis)
    halves = [
        flow_matching_terms(
            velocity,
            x1[s],
            type(draws)(x0=draws.x0[s], t=draws.t[s], tube=draws.tube[s]),
            token_vis=vis[s],
        )
        for s in (slice(0, 2), slice(2, 4))
    ]
    num = sum(h.numerator for h in halves)
    den = sum(h.weight_sum for h in halves)
    torch.testing.assert_close(num / den, whole.loss)
    torch.testing.assert_close(whole.weight_sum, token_weights(vis, 0.01).sum())
    # the one-generator form is the same two steps
    again = flow_matching_loss(
        velocity, x1, z_hist, token_vis=vis, generator=torch.Generator().manual_seed(8)
    )
    torch.testing.assert_close(again.loss, whole.loss)
