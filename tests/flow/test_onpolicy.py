"""On-policy K-step loss: its limits, the detached rollout, clamped targets, the switch, and
the batched evaluation of the visited states (equal to one call per state)."""

import pytest
import torch

from trajloom.flow.losses import weighted_token_mse
from trajloom.flow.onpolicy import (
    OnPolicyConfig,
    endpoint_targets,
    onpolicy_loss,
    select_samples,
    sub_batch_indices,
)
from trajloom.flow.samplers import logit_time_grid


def _latents(b=2, t=5, n=6, c=3, seed=0):
    return torch.randn(
        b, t, n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@pytest.mark.parametrize("steps", [1, 3, 6])
def test_exact_straight_field_gives_zero_loss_and_the_interpolation_path(steps):
    x0, x1, z_hist = _latents(seed=1), _latents(seed=2), _latents(t=4, seed=3)
    vis = (_latents(seed=4)[..., 0] > 0).double()
    out = onpolicy_loss(
        lambda x, t: x1 - x0, x1, z_hist, x0=x0, token_vis=vis, config=OnPolicyConfig(steps=steps)
    )
    assert float(out.loss) < 1e-20 and float(out.rollout) < 1e-20 and float(out.endpoint) < 1e-20
    # on the exact field the visited states are the flow-matching interpolation states
    for tau, state in zip(out.times.tolist(), out.states, strict=True):
        torch.testing.assert_close(state, (1 - tau) * x0 + tau * x1)


def test_one_step_without_extra_terms_is_flow_matching_at_t0():
    x0, x1, z_hist = _latents(seed=1), _latents(seed=2), _latents(t=4, seed=3)
    a = torch.tensor(0.7, dtype=torch.float64)

    def field(x, t):
        return a * x + t.view(-1, 1, 1, 1).to(x.dtype)

    cfg = OnPolicyConfig(steps=1, weight_to_source=0.0, weight_endpoint=0.0, weight=0.3)
    out = onpolicy_loss(field, x1, z_hist, x0=x0, config=cfg)
    fm_at_0 = weighted_token_mse(field(x0, torch.zeros(2)), x1 - x0)
    torch.testing.assert_close(out.loss, 0.3 * fm_at_0.float())


def test_rollout_is_detached_euler_and_gradients_reach_the_model():
    x0, x1, z_hist = _latents(seed=1), _latents(seed=2), _latents(t=4, seed=3)
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    out = onpolicy_loss(lambda x, t: w * x, x1, z_hist, x0=x0, config=OnPolicyConfig(steps=3))
    assert not out.states.requires_grad
    taus = logit_time_grid(3, dtype=torch.float64)
    expected = x0
    for k in range(3):
        torch.testing.assert_close(out.states[k], expected)
        expected = expected + (taus[k + 1] - taus[k]) * 0.5 * expected
    (grad,) = torch.autograd.grad(out.loss, w)
    assert torch.isfinite(grad) and float(grad) != 0.0


def test_endpoint_term_by_hand_for_a_zero_field():
    x0, x1, z_hist = _latents(seed=1), _latents(seed=2), _latents(t=4, seed=3)
    cfg = OnPolicyConfig(steps=4, weight_to_source=0.0, weight=1.0, weight_endpoint=1.0)
    out = onpolicy_loss(lambda x, t: torch.zeros_like(x), x1, z_hist, x0=x0, config=cfg)
    # the rollout never moves; every implied endpoint is x0
    torch.testing.assert_close(out.endpoint, (x0 - x1).pow(2).mean().float())
    taus = out.times.double()
    expected_roll = torch.stack(
        [((x1 - x0) / max(1 - float(t), 0.05)).pow(2).mean() for t in taus]
    ).mean()
    torch.testing.assert_close(out.rollout, expected_roll.float())


def test_denominators_are_clamped():
    x0, x1, state = _latents(seed=1), _latents(seed=2), _latents(seed=3)
    to_data, to_source = endpoint_targets(state, x0, x1, tau=0.999, denom_min=0.05)
    torch.testing.assert_close(to_data, (x1 - state) / 0.05)
    torch.testing.assert_close(to_source, (state - x0) / 0.999)
    to_data, to_source = endpoint_targets(state, x0, x1, tau=0.0, denom_min=0.05)
    torch.testing.assert_close(to_source, (state - x0) / 0.05)
    # a grid crowded at t = 1 keeps the targets finite
    out = onpolicy_loss(
        lambda x, t: torch.zeros_like(x),
        x1,
        state,
        x0=x0,
        config=OnPolicyConfig(steps=8, grid_scale=30.0),
    )
    assert torch.isfinite(out.loss)


def test_visibility_weights_apply_to_rollout_not_endpoint():
    x0, x1, z_hist = _latents(seed=1), _latents(seed=2), _latents(t=4, seed=3)
    vis = torch.ones(2, 5, 6, dtype=torch.float64)
    vis[:, :, :3] = 0

    def field(x, t):
        return torch.zeros_like(x)

    plain = onpolicy_loss(field, x1, z_hist, x0=x0)
    masked = onpolicy_loss(field, x1, z_hist, x0=x0, token_vis=vis)
    assert float(masked.rollout) != pytest.approx(float(plain.rollout))
    torch.testing.assert_close(masked.endpoint, plain.endpoint)


def test_disabled_is_the_without_on_policy_ablation():
    calls = []

    def field(x, t):
        calls.append(1)
        return x

    x1, z_hist = _latents(seed=2), _latents(t=4, seed=3)
    out = onpolicy_loss(field, x1, z_hist, config=OnPolicyConfig(enabled=False))
    assert float(out.loss) == 0.0 and not calls
    onpolicy_loss(field, x1, z_hist, config=OnPolicyConfig(steps=3))
    assert len(calls) == 3


def _conditioned_field(a: torch.Tensor):
    """A field that reads a per-sample condition ``c: "b tf n c"`` (so a wrong repeat shows)."""

    def field(x, t, c):
        return a * x + t.view(-1, 1, 1, 1).to(x.dtype) * c

    return field


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_batched_evaluation_equals_one_call_per_visited_state(steps):
    x0, x1, z_hist = _latents(b=3, seed=1), _latents(b=3, seed=2), _latents(b=3, t=4, seed=3)
    c = _latents(b=3, seed=5)
    vis = (_latents(b=3, seed=4)[..., 0] > 0).double()
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    field = _conditioned_field(a)
    cfg = OnPolicyConfig(steps=steps)
    per_step = onpolicy_loss(
        lambda x, t: field(x, t, c), x1, z_hist, x0=x0, token_vis=vis, config=cfg
    )
    batched = onpolicy_loss(field, x1, z_hist, cond=c, x0=x0, token_vis=vis, config=cfg)
    for name in ("loss", "rollout", "endpoint", "times", "states"):
        torch.testing.assert_close(getattr(batched, name), getattr(per_step, name), msg=name)
    (g_per_step,) = torch.autograd.grad(per_step.loss, a)
    (g_batched,) = torch.autograd.grad(batched.loss, a)
    torch.testing.assert_close(g_batched, g_per_step)


def test_batched_evaluation_on_the_generator_equals_the_per_step_formula():
    """The real model and condition: same loss, states and parameter gradients (fp32 rounding)."""
    from trajloom.flow.config import generator_preset
    from trajloom.flow.model import FlowCondition, TrajLoomGenerator

    torch.manual_seed(0)
    cfg = generator_preset("tiny", hidden_size=32, num_heads=2, depth=2)
    model = TrajLoomGenerator(cfg)
    with torch.no_grad():  # the zero-initialized gates and head would make v independent of x
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    b, th, tf = 2, cfg.hist_latent_frames, cfg.fut_latent_frames
    n, ch = cfg.num_tokens, cfg.latent_channels
    cond = FlowCondition(
        z_hist=torch.randn(b, th, n, ch, generator=g),
        hist_vis=torch.rand(b, th, n, generator=g),
        video=torch.randn(b, th, n, cfg.video_latent_channels, generator=g),
        text=torch.randn(b, cfg.text_embed_dim, generator=g),
    )
    x0, x1 = torch.randn(b, tf, n, ch, generator=g), torch.randn(b, tf, n, ch, generator=g)
    vis = torch.rand(b, tf, n, generator=g)
    op = OnPolicyConfig(steps=3)

    def run(batched: bool):
        model.zero_grad(set_to_none=True)
        if batched:
            out = onpolicy_loss(model, x1, cond.z_hist, cond=cond, x0=x0, token_vis=vis, config=op)
        else:
            out = onpolicy_loss(
                lambda x, t: model(x, t, cond), x1, cond.z_hist, x0=x0, token_vis=vis, config=op
            )
        out.loss.backward()
        return out, {k: p.grad.clone() for k, p in model.named_parameters()}

    (per_step, g_per_step), (batched, g_batched) = run(False), run(True)
    for name in ("loss", "rollout", "endpoint", "states"):
        torch.testing.assert_close(
            getattr(batched, name), getattr(per_step, name), rtol=1e-5, atol=1e-6, msg=name
        )
    assert g_batched.keys() == g_per_step.keys()
    for k in g_per_step:
        torch.testing.assert_close(g_batched[k], g_per_step[k], rtol=1e-4, atol=1e-6, msg=k)


def test_batched_evaluation_is_one_call_with_gradient_after_a_no_grad_rollout():
    calls = []
    field = _conditioned_field(torch.tensor(0.5, dtype=torch.float64, requires_grad=True))

    def spy(x, t, c):
        calls.append((x.shape[0], torch.is_grad_enabled(), t.tolist()))
        return field(x, t, c)

    x1, z_hist, c = _latents(seed=2), _latents(t=4, seed=3), _latents(seed=5)
    out = onpolicy_loss(spy, x1, z_hist, cond=c, config=OnPolicyConfig(steps=4))
    assert [(size, grad) for size, grad, _ in calls] == [(2, False)] * 3 + [(8, True)]
    # the batched call sees state k of every sample at time τ_k, k-major
    taus = out.times.tolist()
    assert calls[-1][2] == pytest.approx([tau for tau in taus for _ in range(2)])


def test_sub_batch_indices():
    idx = sub_batch_indices(32, 8, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (8,) and len(set(idx.tolist())) == 8 and int(idx.max()) < 32
    assert sub_batch_indices(3, 8).shape == (3,)


def test_config_round_trip_and_validation():
    cfg = OnPolicyConfig(steps=6, weight=0.2)
    assert OnPolicyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="denom_min"):
        OnPolicyConfig(denom_min=0.0)


def test_select_samples_indexes_every_tensor_field():
    from trajloom.flow.model import FlowCondition

    cond = FlowCondition(
        z_hist=torch.arange(4.0).view(4, 1, 1, 1), text=torch.arange(8.0).view(4, 2)
    )
    sub = select_samples(cond, torch.tensor([3, 1]))
    assert sub.z_hist.flatten().tolist() == [3.0, 1.0]
    assert sub.text.tolist() == [[6.0, 7.0], [2.0, 3.0]]
    assert sub.video is None and sub.hist_vis is None
