"""Released-checkpoint compatibility of trajloom.vae.

The released code (zewei-Zhang/TrajLoom, models/trajloom_vae.py) cannot run here
(it needs timm), so this file rebuilds what it would produce, from its source:

* ``released_key_shapes``: every state-dict key and shape the released module tree
  registers (timm ``PatchEmbed.proj``, timm ``Mlp.fc1/fc2``, the unused ``norm2``, the
  ``offset_anchor_grid`` buffer only with offsets, frozen ``pos_embed`` /
  ``temp_embed_in`` / LFF ``w`` parameters);
* ``Released*``: a functional re-statement of the released forward on the *dense*
  field (conv patch embedding, ``get_normalized_patch_centers``, ``_run_blocks``,
  replicate-padded temporal convs, ``unpatchify`` with its ``permute(0, 5, 1, 3, 2, 4)``,
  softplus posterior scale, clamp/denormalize/read-back), written independently of
  the package's code paths.

A checkpoint in the released format (``torch.save({"vae": sd, "cfg": {"vae": cfg}})``)
with random weights is loaded through ``from_released`` and must load strictly and
give the reference's outputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.distributions import Normal, kl_divergence

import trajloom.vae as tv
from trajloom.encoding import GridSpec, normalize, query_points, rasterize, unpatchify
from trajloom.vae.losses import kl_loss, masked_huber

# The released configs/trajloom_vae_config.json, section trajloom_vae.config, verbatim.
RELEASED_PAPER_CONFIG = {
    "encoder_depth": 16,
    "decoder_depth": 16,
    "hidden_size": 512,
    "num_heads": 8,
    "patch_size": 32,
    "in_channels": 2,
    "latent_channels": 16,
    "input_height": 480,
    "input_width": 832,
    "num_frames_in": 81,
    "num_frames_latent": 21,
    "use_temp_compress": True,
    "temp_stride": 4,
    "use_offsets": True,
    "num_frame_tokens": 256,
    "learn_sigma": False,
    "beta": 5e-5,
    "pos_embed_dim": 64,
}

SMALL_RELEASED = {
    "encoder_depth": 4,
    "decoder_depth": 4,
    "hidden_size": 32,
    "num_heads": 4,
    "patch_size": 32,
    "in_channels": 2,
    "latent_channels": 4,
    "input_height": 64,
    "input_width": 96,
    "num_frames_in": 9,
    "num_frames_latent": 3,
    "use_temp_compress": True,
    "temp_stride": 4,
    "use_offsets": True,
    "num_frame_tokens": 256,
    "learn_sigma": False,
    "beta": 5e-5,
    "pos_embed_dim": 8,
}


# --------------------------------------------------------------------------- released facts
def released_key_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the released TrajLoomVAE(**cfg), read from its source."""
    h, w, p = cfg["input_height"], cfg["input_width"], cfg["patch_size"]
    d, c, pe = cfg["hidden_size"], cfg["latent_channels"], cfg["pos_embed_dim"]
    n, t = (h // p) * (w // p), cfg["num_frames_in"]
    k = 2 * cfg["temp_stride"] - 1
    mlp = int(d * cfg.get("mlp_ratio", 4.0))
    out: dict[str, tuple[int, ...]] = {"pos_embed": (1, n, d), "temp_embed_in": (1, t, d)}
    if cfg["use_offsets"]:
        out["offset_anchor_grid"] = (1, 1, 2, h, w)
    if cfg["use_temp_compress"]:
        out |= {
            "temp_compressor.conv.weight": (d, d, k),
            "temp_compressor.conv.bias": (d,),
            "temp_expander.deconv.weight": (d, d, k),
            "temp_expander.deconv.bias": (d,),
        }
    out |= {
        "x_embedder.proj.weight": (d, 2, p, p),
        "x_embedder.proj.bias": (d,),
        "patch_pos_lff.w": (pe // 2, 2),
        "patch_pos_lff.mlp.fc1.weight": (4 * pe, pe),
        "patch_pos_lff.mlp.fc1.bias": (4 * pe,),
        "patch_pos_lff.mlp.fc2.weight": (pe, 4 * pe),
        "patch_pos_lff.mlp.fc2.bias": (pe,),
        "patch_pos_proj.weight": (d, pe),
        "patch_pos_proj.bias": (d,),
        "to_latents.weight": (2 * c, d),
        "to_latents.bias": (2 * c,),
        "from_latents.weight": (d, c),
        "from_latents.bias": (d,),
        "final_layer.weight": (p * p * 2, d),
        "final_layer.bias": (p * p * 2,),
    }
    for stack, depth in (("encoder_blocks", cfg["encoder_depth"]), ("decoder_blocks", cfg["decoder_depth"])):  # fmt: skip
        for i in range(depth):
            pre = f"{stack}.{i}."
            out |= {
                pre + "norm1.weight": (d,),
                pre + "attn.qkv.weight": (3 * d, d),
                pre + "attn.qkv.bias": (3 * d,),
                pre + "attn.proj.weight": (d, d),
                pre + "attn.proj.bias": (d,),
                pre + "norm2.weight": (d,),
                pre + "norm3.weight": (d,),
                pre + "mlp.fc1.weight": (mlp, d),
                pre + "mlp.fc1.bias": (mlp,),
                pre + "mlp.fc2.weight": (d, mlp),
                pre + "mlp.fc2.bias": (d,),
                pre + "gate_msa": (1, 1, d),
                pre + "gate_mlp": (1, 1, d),
            }
    return out


def released_1d_sincos(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def released_2d_sincos(dim: int, gh: int, gw: int) -> np.ndarray:
    grid = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape(2, 1, gh, gw)
    return np.concatenate(
        [released_1d_sincos(dim // 2, grid[0]), released_1d_sincos(dim // 2, grid[1])], axis=1
    )


def released_anchor_grid(h: int, w: int) -> torch.Tensor:
    ys = torch.linspace(0.5, h - 0.5, steps=h)
    xs = torch.linspace(0.5, w - 0.5, steps=w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([xx, yy], dim=0)
    coords = (coords / torch.tensor([w, h]).view(2, 1, 1)) * 2.0 - 1.0
    return coords[None, None]


def random_released_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the released layout (gates and final layer non-zero, so every
    part of the network shows in the outputs)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in released_key_shapes(cfg).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        sd[key] = torch.randn(shape, generator=g) / math.sqrt(max(fan_in, 1))
        if key.endswith(("norm1.weight", "norm2.weight", "norm3.weight")):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        if key.endswith(("gate_msa", "gate_mlp")):
            sd[key] = 0.5 * torch.randn(shape, generator=g)
    p = cfg["patch_size"]
    gh, gw = cfg["input_height"] // p, cfg["input_width"] // p
    sd["pos_embed"] = torch.from_numpy(released_2d_sincos(cfg["hidden_size"], gh, gw)).float()[None]
    frames = np.arange(cfg["num_frames_in"], dtype=np.float32)
    sd["temp_embed_in"] = torch.from_numpy(released_1d_sincos(cfg["hidden_size"], frames)).float()[
        None
    ]
    if cfg["use_offsets"]:
        sd["offset_anchor_grid"] = released_anchor_grid(cfg["input_height"], cfg["input_width"])
    sd["patch_pos_lff.w"] = torch.randn(sd["patch_pos_lff.w"].shape, generator=g)
    return sd


class Released:
    """The released forward, re-stated on the dense field with plain torch ops."""

    def __init__(self, sd: dict[str, torch.Tensor], cfg: dict) -> None:
        self.sd, self.cfg = sd, cfg
        self.p = cfg["patch_size"]
        self.gh, self.gw = cfg["input_height"] // self.p, cfg["input_width"] // self.p
        self.heads = cfg["num_heads"]
        f = cfg["temp_stride"]
        self.t_in = cfg["num_frames_in"]
        self.t_lat = 1 + (self.t_in - 1) // f if cfg["use_temp_compress"] else self.t_in

    def lin(self, x, name):
        return F.linear(x, self.sd[name + ".weight"], self.sd.get(name + ".bias"))

    def mlp(self, x, name):
        return self.lin(F.gelu(self.lin(x, name + ".fc1")), name + ".fc2")

    def block(self, x, pre):
        sd = self.sd
        b, n, c = x.shape
        h = F.rms_norm(x, (c,), sd[pre + "norm1.weight"], eps=1e-6)
        qkv = self.lin(h, pre + "attn.qkv").reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + sd[pre + "gate_msa"] * self.lin(a, pre + "attn.proj")
        h = F.rms_norm(x, (c,), sd[pre + "norm3.weight"], eps=1e-6)
        return x + sd[pre + "gate_mlp"] * self.mlp(h, pre + "mlp")

    def run_blocks(self, x, names, b, t, add_temp):
        for i in range(0, len(names), 2):
            x = self.block(x, names[i])
            if i + 1 < len(names):
                x = rearrange(x, "(b t) n d -> (b n) t d", b=b, t=t)
                if add_temp and i == 0:
                    x = x + self.sd["temp_embed_in"][:, :t]
                x = self.block(x, names[i + 1])
                x = rearrange(x, "(b n) t d -> (b t) n d", b=b, n=self.gh * self.gw)
        return x

    def compress(self, x):
        b, _, n, _ = x.shape
        f = self.cfg["temp_stride"]
        y = F.pad(rearrange(x, "b t n d -> (b n) d t"), (f - 1, f - 1), mode="replicate")
        y = F.conv1d(
            y,
            self.sd["temp_compressor.conv.weight"],
            self.sd["temp_compressor.conv.bias"],
            stride=f,
        )
        return rearrange(y[..., : self.t_lat], "(b n) d t -> b t n d", b=b, n=n)

    def expand(self, x):
        b, _, n, _ = x.shape
        f = self.cfg["temp_stride"]
        y = F.pad(rearrange(x, "b t n d -> (b n) d t"), (f - 1, f - 1), mode="replicate")
        y = F.conv_transpose1d(
            y,
            self.sd["temp_expander.deconv.weight"],
            self.sd["temp_expander.deconv.bias"],
            stride=f,
            padding=f - 1,
        )
        y = y[..., (f - 1) * f : (f - 1) * f + self.t_in]
        return rearrange(y, "(b n) d t -> b t n d", b=b, n=n)

    def patch_centers(self):
        h, w = self.cfg["input_height"], self.cfg["input_width"]
        i, j = torch.meshgrid(
            torch.linspace(0.5, self.gh - 0.5, self.gh),
            torch.linspace(0.5, self.gw - 0.5, self.gw),
            indexing="ij",
        )
        centers = torch.stack([j * (w / self.gw), i * (h / self.gh)], dim=-1).view(-1, 2)
        return (centers / torch.tensor([w, h])) * 2.0 - 1.0

    def encode(self, field):
        """field "b t 2 h w" absolute normalized -> (mean, scale) "b t' n c"."""
        cfg, sd = self.cfg, self.sd
        b, t = field.shape[:2]
        if cfg["use_offsets"]:
            field = field - sd["offset_anchor_grid"]
        x = F.conv2d(
            rearrange(field, "b t c h w -> (b t) c h w"),
            sd["x_embedder.proj.weight"],
            sd["x_embedder.proj.bias"],
            stride=self.p,
        )
        x = x.flatten(2).transpose(1, 2) + sd["pos_embed"]
        xw = self.patch_centers() @ sd["patch_pos_lff.w"].t()
        feats = torch.cat([torch.cos(xw), torch.sin(xw)], -1) / math.sqrt(cfg["pos_embed_dim"])
        x = x + self.lin(self.mlp(feats, "patch_pos_lff.mlp"), "patch_pos_proj")
        names = [f"encoder_blocks.{i}." for i in range(cfg["encoder_depth"])]
        if cfg["use_temp_compress"]:
            mid = len(names) // 2
            x = self.run_blocks(x, names[:mid], b, t, True)
            x = self.compress(rearrange(x, "(b t) n d -> b t n d", b=b))
            x = self.run_blocks(
                rearrange(x, "b t n d -> (b t) n d"), names[mid:], b, self.t_lat, False
            )
        else:
            x = self.run_blocks(x, names, b, t, True)
        mean, logvar = self.lin(rearrange(x, "(b t) n d -> b t n d", b=b), "to_latents").chunk(
            2, -1
        )
        return mean, F.softplus(0.5 * logvar) + 1e-8

    def decode(self, z):
        """z "b t' n c" -> dense absolute field "b t 2 h w" (unclamped)."""
        cfg, sd = self.cfg, self.sd
        b = z.shape[0]
        x = self.lin(z, "from_latents")
        names = [f"decoder_blocks.{i}." for i in range(cfg["decoder_depth"])]
        if cfg["use_temp_compress"]:
            mid = len(names) // 2
            x = self.run_blocks(
                rearrange(x, "b t n d -> (b t) n d"), names[:mid], b, self.t_lat, False
            )
            x = self.expand(rearrange(x, "(b t) n d -> b t n d", b=b))
            x = self.run_blocks(
                rearrange(x, "b t n d -> (b t) n d"), names[mid:], b, self.t_in, False
            )
        else:
            x = self.run_blocks(rearrange(x, "b t n d -> (b t) n d"), names, b, self.t_in, False)
        x = self.lin(x, "final_layer")
        bt, p = x.shape[0], self.p
        x = x.view(bt, self.gh, self.gw, p, p, 2).permute(0, 5, 1, 3, 2, 4).contiguous()
        x = x.view(bt, 2, self.gh * p, self.gw * p)
        x = rearrange(x, "(b t) c h w -> b t c h w", b=b)
        if cfg["use_offsets"]:
            x = x + sd["offset_anchor_grid"]
        return x

    def decode_tracks(self, z):
        field = self.decode(z).clamp(-1, 1)
        w, h = self.cfg["input_width"], self.cfg["input_height"]
        px = (field + 1) * 0.5 * torch.tensor([w, h]).view(1, 1, 2, 1, 1)
        s = self.p
        q = query_points(GridSpec(width=w, height=h, stride=s)).long()
        return rearrange(px[..., q[:, 1], q[:, 0]], "b t c n -> b t n c")


# --------------------------------------------------------------------------- helpers
def _tracks(
    cfg: dict, batch: int = 2, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, GridSpec]:
    spec = GridSpec(width=cfg["input_width"], height=cfg["input_height"], stride=cfg["patch_size"])
    g = torch.Generator().manual_seed(seed)
    t = cfg["num_frames_in"]
    q = query_points(spec)
    drift = torch.cumsum(torch.randn(batch, t, spec.num_points, 2, generator=g) * 3.0, dim=1)
    tracks = (q + drift).clamp(-20, max(spec.width, spec.height) + 20)
    vis = torch.rand(batch, t, spec.num_points, generator=g) > 0.3
    return tracks, vis, spec


def _save_released(tmp_path, cfg, layout="vae", seed=0):
    sd = random_released_state_dict(cfg, seed)
    ckpt = tmp_path / "vae.pt"
    if layout == "vae":
        torch.save({"vae": sd, "cfg": {"vae": dict(cfg)}}, ckpt)
    elif layout == "model_state_dict":
        torch.save({"model_state_dict": sd}, ckpt)
    else:
        torch.save(sd, ckpt)
    config_json = tmp_path / "trajloom_vae_config.json"
    config_json.write_text(json.dumps({"trajloom_vae": {"config": cfg}}))
    return sd, ckpt, config_json


VARIANTS = {
    "paper-like": SMALL_RELEASED,
    "no-offsets-odd-mid": {**SMALL_RELEASED, "use_offsets": False, "encoder_depth": 6, "decoder_depth": 2},
    "no-temporal-compression": {**SMALL_RELEASED, "use_temp_compress": False, "num_frames_in": 6},
}  # fmt: skip


# --------------------------------------------------------------------------- tests
def test_paper_preset_is_the_released_config():
    assert tv.released_config({"trajloom_vae": {"config": RELEASED_PAPER_CONFIG}}) == tv.vae_preset(
        "paper"
    )


def test_paper_model_has_exactly_the_released_keys_and_shapes():
    with torch.device("meta"):
        model = tv.TrajLoomVAE(tv.vae_preset("paper"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == released_key_shapes(RELEASED_PAPER_CONFIG)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_from_released_loads_strictly_and_matches_the_released_forward(tmp_path, variant):
    cfg = VARIANTS[variant]
    sd, ckpt, config_json = _save_released(tmp_path, cfg)
    model = tv.from_released(ckpt, config_json)
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    for key, value in sd.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)

    ref = Released(sd, cfg)
    tracks, vis, spec = _tracks(cfg)
    field, _ = rasterize(tracks, vis, spec)
    values = normalize(tracks, spec)
    with torch.no_grad():
        mean_ref, scale_ref = ref.encode(field.contiguous())
        for post in (model.encode(values), model.encode_dense(field), model.encode_tracks(tracks)):
            torch.testing.assert_close(post.mean, mean_ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(post.std, scale_ref, rtol=1e-4, atol=1e-5)

        z = mean_ref + scale_ref * torch.randn(
            mean_ref.shape, generator=torch.Generator().manual_seed(3)
        )
        dense_ref = ref.decode(z)
        ours = unpatchify(model.decode(z), spec)  # "b t n (p q) 2" -> "b t 2 h w"
        torch.testing.assert_close(ours, dense_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            model.decode_tracks(z), ref.decode_tracks(z), rtol=1e-4, atol=1e-3
        )


@pytest.mark.parametrize("layout", ["model_state_dict", "bare"])
def test_other_checkpoint_layouts_load(tmp_path, layout):
    sd, ckpt, config_json = _save_released(tmp_path, SMALL_RELEASED, layout=layout)
    model = tv.from_released(ckpt, config_json)
    torch.testing.assert_close(model.state_dict()["to_latents.weight"], sd["to_latents.weight"])
    if layout == "bare":
        with pytest.raises(ValueError, match="holds no cfg"):
            tv.from_released(ckpt)


def test_config_may_come_from_the_checkpoint(tmp_path):
    _, ckpt, _ = _save_released(tmp_path, SMALL_RELEASED)
    model = tv.from_released(ckpt)
    assert model.config == tv.released_config(SMALL_RELEASED)
    assert not any(p.requires_grad for p in model.parameters())


def test_mismatched_checkpoint_is_refused(tmp_path):
    sd, ckpt, config_json = _save_released(tmp_path, SMALL_RELEASED)
    del sd["encoder_blocks.0.norm2.weight"]
    torch.save({"vae": sd}, ckpt)
    with pytest.raises(ValueError, match="missing keys"):
        tv.from_released(ckpt, config_json)
    # offsets off: the released state dict has no anchor buffer, ours must not expect one
    other = tmp_path / "no_offsets"
    other.mkdir()
    sd2, ckpt2, _ = _save_released(other, {**SMALL_RELEASED, "use_offsets": False})
    assert "offset_anchor_grid" not in sd2
    with pytest.raises(ValueError, match="missing keys"):
        tv.from_released(ckpt2, config_json)  # config_json says use_offsets=True


def test_released_loss_pooling_and_kl():
    cfg = SMALL_RELEASED
    sd = random_released_state_dict(cfg)
    model = tv.TrajLoomVAE(tv.released_config(cfg))
    model.load_state_dict(sd)
    tracks, vis, spec = _tracks(cfg)
    values = normalize(tracks, spec)
    field, mask = rasterize(tracks, vis, spec)
    with torch.no_grad():
        post = model.encode(values)
        recon = model.decode(post.mean)
        # the released forward's ll and kl, on dense tensors
        x_hat = unpatchify(recon, spec)
        ll_map = -F.huber_loss(x_hat, field, reduction="none")
        m = mask.float().unsqueeze(2)
        ll = (ll_map * m).sum(dim=[1, 2, 3, 4]) / (m.sum(dim=[1, 2, 3, 4]) * 2).clamp_min(1.0)
        kl = kl_divergence(Normal(post.mean, post.std), Normal(0.0, 1.0)).mean(dim=[1, 2, 3])
    torch.testing.assert_close(masked_huber(recon, values, vis), -ll, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(kl_loss(post), kl, rtol=1e-5, atol=1e-7)
