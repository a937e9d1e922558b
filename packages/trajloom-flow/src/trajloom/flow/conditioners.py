"""Conditioners: history video and caption -> the generator's context tensors (paper §3.3, A.2).

Nothing here downloads: the released conditioners load from local paths only, and say
which path is missing and what to put there.

Video context (``"b t h w 3"`` history frames -> ``"b t' n cv"`` latents on the token grid):

* :class:`LightVideoEncoder` — a small trainable conv net (ours), trained jointly with the
  generator: frames reduced to ``cell x cell`` pixels per token (:func:`context_frames`, an
  area average rounded to uint8: what the training cache stores, so a trained set sees the
  same input at inference), a strided 2-D conv stack down to the token grid
  (``Hg x Wg``), then a causal temporal conv of stride 4 whose first output sees only the
  first frame (``1 + (T - 1) / 4`` steps: 81 -> 21, the Wan VAE's temporal layout).
* :class:`WanVideoEncoder` — the Wan2.1 VAE through ``diffusers`` (the released
  conditioner): frames in [-1, 1], bilinear resize by stride / 8 (the released 1/4 at
  stride 32: 832x480 -> 208x120, which the VAE's 8x downsampling takes to the grid), posterior
  mean normalized by the VAE's ``latents_mean``/``latents_std`` (what the Wan repository's
  ``WanVAE.encode`` returns), ``"b c t h w" -> "b t (h w) c"`` (21 x 390 x 16).

Captions (``"b dt"``):

* :class:`HashedTextEncoder` — the built-in caption encoder (ours), trained jointly with
  the generator: a mean over learned embeddings of the caption's hashed words and word
  pairs (an embedding bag); the empty caption is the null embedding;
* :func:`precomputed_text` — embeddings stored with the data (shard member ``text.npy``);
* :class:`UMT5TextEncoder` — umT5 through ``transformers`` from a local path, mean over
  the caption's tokens (released ``encode_text_t5_pooled``, max length 128);
  both released conditioners need the optional extra ``trajloom-flow[wan]``;
* :func:`null_text` / :func:`drop_text` — the null (all-zero) embedding and caption
  dropout for unconditional training (released ``dropout_prob`` 0.1).
"""

from __future__ import annotations

import html
import importlib
import itertools
import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from trajloom.encoding import GridSpec, latent_frames

__all__ = [
    "UMT5_MAX_LENGTH",
    "WAN21_VAE_CONFIG",
    "WAN_LATENT_CHANNELS",
    "HashedTextConfig",
    "HashedTextEncoder",
    "LightVideoEncoder",
    "LightVideoEncoderConfig",
    "TextEncoder",
    "UMT5TextEncoder",
    "VideoEncoder",
    "WanVideoEncoder",
    "caption_features",
    "clean_caption",
    "context_frames",
    "drop_text",
    "frames_to_unit",
    "load_hashed_text_encoder",
    "load_light_video_encoder",
    "null_text",
    "precomputed_text",
    "save_hashed_text_encoder",
    "save_light_video_encoder",
    "text_dropout_mask",
    "umt5_width",
    "wan_resize_factor",
]


class VideoEncoder(Protocol):
    """History frames ``"b t h w 3"`` (uint8 RGB) -> video latents ``"b t' n cv"``."""

    def __call__(self, frames: torch.Tensor) -> torch.Tensor: ...


class TextEncoder(Protocol):
    """Captions -> pooled embeddings ``"b dt"``."""

    def __call__(self, captions: Sequence[str]) -> torch.Tensor: ...


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this conditioner needs the optional dependency {module!r}; install it with "
            "`pip install 'trajloom-flow[wan]'` (diffusers and transformers; `uv sync` in the "
            "workspace installs them with the dev group)"
        ) from err


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be 'b t h w 3' RGB (uint8 or float in [0, 255]), got shape "
            f"{tuple(frames.shape)}"
        )


def frames_to_unit(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``"b t h w 3"`` in [0, 255] -> ``"b 3 t h' w'"`` float32 in [-1, 1], resized to ``size``.

    ``size`` is ``(height, width)``; bilinear, ``align_corners=False`` (the released
    ``resize_video_bcthw``); no resize when the frames already have that size.
    """
    _check_frames(frames)
    x = frames.float() / 127.5 - 1.0
    b, t, h, w, _ = x.shape
    x = rearrange(x, "b t h w c -> (b t) c h w")
    if (h, w) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return rearrange(x, "(b t) c h w -> b c t h w", b=b, t=t)


def context_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``"b t h w 3"`` frames -> ``"b t h' w' 3"`` uint8 at ``size = (h', w')``.

    An area average (each output pixel the mean of the input pixels it covers; no aliasing
    for the large reductions used here) rounded to uint8. The training cache stores this and
    :class:`LightVideoEncoder` applies it to frames of any other size, so frames read at
    inference reach the encoder exactly as the cached ones did in training.
    """
    _check_frames(frames)
    b, t, h, w, _ = frames.shape
    if (h, w) == tuple(size):
        return frames if frames.dtype == torch.uint8 else frames.round().clamp(0, 255).byte()
    x = rearrange(frames.float(), "b t h w c -> (b t) c h w")
    x = F.interpolate(x, size=size, mode="area")
    x = x.round().clamp(0, 255).to(torch.uint8)
    return rearrange(x, "(b t) c h w -> b t h w c", b=b, t=t)


# -----------------------------------------------------------------------------
# Light trainable video encoder
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LightVideoEncoderConfig:
    """A small conv encoder from history frames to latents on the token grid (ours)."""

    width: int = 832  # working resolution, pixels
    height: int = 480
    stride: int = 32  # token cell size: the output grid is (height / stride, width / stride)
    resize_factor: int = 4  # frames are first resized to 1/resize_factor (as for the Wan VAE)
    temporal_factor: int = 4  # frames per latent step, first frame kept
    hidden: int = 64  # conv channels
    out_channels: int = 16  # cv: the generator's video_latent_channels

    def __post_init__(self) -> None:
        for name in (
            "width",
            "height",
            "stride",
            "resize_factor",
            "temporal_factor",
            "hidden",
            "out_channels",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"LightVideoEncoderConfig.{name} must be a positive int, got {value!r}"
                )
        GridSpec(width=self.width, height=self.height, stride=self.stride)
        down = self.stride // self.resize_factor
        if self.stride % self.resize_factor or down & (down - 1):
            raise ValueError(
                f"LightVideoEncoderConfig: stride / resize_factor = {self.stride} / "
                f"{self.resize_factor} must be a power of two (stride-2 convs reach the grid)"
            )

    @classmethod
    def for_grid(cls, grid: GridSpec, *, cell: int = 4, **fields: Any) -> LightVideoEncoderConfig:
        """The encoder for ``grid`` reading ``cell x cell`` pixels per token (the cache's size).

        ``fields``: the other config fields (``temporal_factor``, ``hidden``, ``out_channels``).
        """
        if cell < 1 or grid.stride % cell:
            raise ValueError(
                f"video context cell={cell} must divide the grid stride {grid.stride} (pixels "
                "per token side of the cached frames, e.g. 4)"
            )
        return cls(
            width=grid.width,
            height=grid.height,
            stride=grid.stride,
            resize_factor=grid.stride // cell,
            **fields,
        )

    @property
    def grid(self) -> GridSpec:
        return GridSpec(width=self.width, height=self.height, stride=self.stride)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` the frames are resized to."""
        return (self.height // self.resize_factor, self.width // self.resize_factor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LightVideoEncoderConfig:
        return cls(**d)


class LightVideoEncoder(nn.Module):
    """History frames ``"b t h w 3"`` -> video latents ``"b t' n cv"`` aligned with the grid.

    Per frame: :func:`context_frames` to ``input_size`` (unless the frames have it already),
    then ``log2(stride / resize_factor)`` blocks of ``Conv2d(3x3, stride 2) + SiLU``
    (832x480 -> 208x120 -> 26x15). Over time: the first frame is replicated
    ``temporal_factor - 1`` times in front and a ``Conv3d`` with kernel and stride
    ``(temporal_factor, 1, 1)`` groups frames ``[0]*4, [1..4], [5..8], ...``; a per-token
    Linear gives ``out_channels``. Frames must number ``1 + k * temporal_factor``.
    """

    def __init__(self, config: LightVideoEncoderConfig = LightVideoEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        n_down = int(math.log2(c.stride // c.resize_factor))
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(n_down):
            layers += [nn.Conv2d(in_ch, c.hidden, 3, stride=2, padding=1), nn.SiLU()]
            in_ch = c.hidden
        self.spatial = nn.Sequential(*layers)
        self.temporal = nn.Conv3d(
            in_ch, c.hidden, kernel_size=(c.temporal_factor, 1, 1), stride=(c.temporal_factor, 1, 1)
        )
        self.out = nn.Linear(c.hidden, c.out_channels)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        c = self.config
        _check_frames(frames)
        t = frames.shape[1]
        latent_frames(t, c.temporal_factor)  # raises with a suggestion for bad lengths
        x = frames_to_unit(context_frames(frames, c.input_size), c.input_size)
        x = x.to(self.out.weight.dtype)
        b = x.shape[0]
        x = self.spatial(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
        # causal grouping: latent step 0 sees the first frame only
        x = torch.cat([x[:, :, :1].expand(-1, -1, c.temporal_factor - 1, -1, -1), x], dim=2)
        x = F.silu(self.temporal(x))
        return self.out(rearrange(x, "b c t h w -> b t (h w) c"))


def _save_conditioner(module: nn.Module, config: Any, folder: str | Path, kind: str) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(config.to_dict())
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(
        state, str(folder / "model.safetensors"), metadata={"trajloom": kind, "config": config_json}
    )
    (folder / "config.json").write_text(config_json + "\n")
    return folder


def _load_conditioner(folder: str | Path, build: Any, config_cls: Any, writer: str) -> Any:
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("model.safetensors", "config.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found; expected a folder written by {writer}"
            )
    module = build(config_cls.from_dict(json.loads((folder / "config.json").read_text())))
    module.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return module.eval()


def save_light_video_encoder(module: LightVideoEncoder, folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``."""
    return _save_conditioner(module, module.config, folder, "light_video_encoder")


def load_light_video_encoder(folder: str | Path) -> LightVideoEncoder:
    """Load a folder written by :func:`save_light_video_encoder` (strict)."""
    return _load_conditioner(
        folder, LightVideoEncoder, LightVideoEncoderConfig, "save_light_video_encoder"
    )


# -----------------------------------------------------------------------------
# Wan2.1 VAE (released video conditioner)
# -----------------------------------------------------------------------------


def _missing(path: Path, what: str, hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {path}: {hint}. Nothing is downloaded.")


#: Latent channels of the Wan2.1 VAE (the generator's ``video_latent_channels``).
WAN_LATENT_CHANNELS = 16
#: Spatial downsampling of the Wan2.1 VAE: a token of stride s reads s / 8 x s / 8 input
#: pixels, so frames are resized by ``resize_factor = stride / 8`` first (4 at stride 32).
WAN_SPATIAL_FACTOR = 8

#: Caption length in tokens of the released umT5 context (``text_encoder.max_length``).
UMT5_MAX_LENGTH = 128


def wan_resize_factor(grid: GridSpec) -> int:
    """Frame downscaling that puts the Wan VAE's latent grid on the token grid: stride / 8."""
    if grid.stride % WAN_SPATIAL_FACTOR:
        raise ValueError(
            f"the Wan VAE's latents lie on a grid of {WAN_SPATIAL_FACTOR} x "
            f"{WAN_SPATIAL_FACTOR} pixels; the grid stride {grid.stride} must be a multiple of "
            f"{WAN_SPATIAL_FACTOR} for Wan video context (e.g. 16 or 32)"
        )
    return grid.stride // WAN_SPATIAL_FACTOR


#: The Wan2.1 VAE's architecture and latent statistics: what the original ``Wan2.1_VAE.pth``
#: holds weights for (the ``vae/config.json`` of ``Wan-AI/Wan2.1-T2V-*-Diffusers``; the
#: statistics are the ``mean``/``std`` of the Wan repository's ``WanVAE``). A single
#: weights file is read with this config, so nothing is fetched from the Hub.
# fmt: off
WAN21_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 96,
    "z_dim": WAN_LATENT_CHANNELS,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ],
}
# fmt: on


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (a Wan2.1 VAE checkpoint)")
    return state


def _load_wan_vae(path: Path, config: str | Path | None, dtype: torch.dtype) -> Any:
    """``AutoencoderKLWan`` from a diffusers folder or a single weights file, offline.

    A single file is read with ``config`` (a diffusers ``config.json`` or the folder holding
    it; default :data:`WAN21_VAE_CONFIG`), its keys converted by diffusers' Wan converter
    (which leaves diffusers-format keys as they are) and loaded strictly: a file that is not
    this VAE fails here instead of leaving random weights behind (diffusers'
    ``from_single_file`` only warns, and without a config asks the Hub for one).
    """
    cls = _require("diffusers").AutoencoderKLWan
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _missing(
                path / "config.json",
                "the diffusers config of the Wan2.1 VAE",
                "give the vae/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (config.json + "
                "weights) or the single file Wan2.1_VAE.pth",
            )
        return cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    if config is None:
        cfg = dict(WAN21_VAE_CONFIG)
    else:
        config = Path(config)
        cfg = json.loads((config / "config.json" if config.is_dir() else config).read_text())
    convert = importlib.import_module("diffusers.loaders.single_file_utils")
    state = convert.convert_wan_vae_to_diffusers(_read_weights(path))
    hint = "give Wan2.1_VAE.pth, or the diffusers config of these weights as config="
    with torch.device("meta"):  # no random init: every weight comes from the file
        model = cls.from_config(cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shapes that do not fit the config
        raise ValueError(f"{path} does not fit the Wan VAE config: {err}; {hint}") from err
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a Wan VAE checkpoint for this config: {len(missing)} weights "
            f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. "
            f"{unexpected[:3]}); {hint}"
        )
    return model.to(dtype)


class WanVideoEncoder(nn.Module):
    """The Wan2.1 VAE encoder as the released video conditioner, from a local path.

    ``path`` is a diffusers-format folder (``config.json`` + weights, e.g. the ``vae/``
    folder of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``) or a single weights file such as the
    original ``Wan2.1_VAE.pth`` (read with ``config``, default :data:`WAN21_VAE_CONFIG`).
    ``resize_factor`` defaults to ``grid.stride / 8`` (the released 4 at stride 32), so that
    the VAE's latent grid is the token grid.
    """

    # Buffers registered in __init__ (nn.Module.__getattr__ would type them Tensor | Module).
    latents_mean: torch.Tensor
    latents_std: torch.Tensor

    def __init__(
        self,
        path: str | Path,
        *,
        grid: GridSpec = GridSpec(),
        resize_factor: int | None = None,
        config: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        path = Path(path)
        if not path.exists():
            raise _missing(
                path,
                "Wan2.1 VAE weights",
                "pass wan_vae_path= the vae/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers or the "
                "file Wan2.1_VAE.pth, or leave it None to sample without video context",
            )
        if resize_factor is None:
            resize_factor = wan_resize_factor(grid)
        if grid.stride != WAN_SPATIAL_FACTOR * resize_factor:
            raise ValueError(
                f"the Wan VAE downsamples by {WAN_SPATIAL_FACTOR}, so resize_factor * "
                f"{WAN_SPATIAL_FACTOR} must equal the grid stride {grid.stride}; got "
                f"resize_factor={resize_factor} (use a grid stride that is a multiple of 8)"
            )
        self.path = str(path)
        self.resize_factor = resize_factor
        self.vae = _load_wan_vae(path, config, dtype)
        self.vae.eval().requires_grad_(False)
        cfg = self.vae.config
        if cfg.z_dim != WAN_LATENT_CHANNELS:
            raise ValueError(
                f"{path}: a VAE with {cfg.z_dim} latent channels; the released video "
                f"conditioner is the Wan2.1 VAE ({WAN_LATENT_CHANNELS} channels)"
            )
        self.register_buffer(
            "latents_mean", torch.tensor(cfg.latents_mean).float(), persistent=False
        )
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).float(), persistent=False)
        self.size = (grid.height // resize_factor, grid.width // resize_factor)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``"b t h w 3"`` -> ``"b t' n 16"`` normalized Wan latents (``t' = 1 + (t - 1) / 4``).

        Tokens in the row-major order of the grid (y outer, x inner), float32.
        """
        _check_frames(frames)
        latent_frames(frames.shape[1], 4)  # the Wan VAE's causal 1 + 4k layout
        dtype = next(self.vae.parameters()).dtype
        x = frames_to_unit(frames.to(self.latents_mean.device), self.size).to(dtype)
        mu = self.vae.encode(x).latent_dist.mean.float()
        mean = self.latents_mean.view(1, -1, 1, 1, 1)
        std = self.latents_std.view(1, -1, 1, 1, 1)
        return rearrange((mu - mean) / std, "b c t h w -> b t (h w) c")


# -----------------------------------------------------------------------------
# Captions
# -----------------------------------------------------------------------------


def umt5_width(path: str | Path) -> int:
    """Width ``dt`` of the umT5 encoder in ``path`` (``d_model`` of its ``config.json``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise _missing(
            config,
            "the config of the umT5 encoder",
            "give the text_encoder/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (config.json + "
            "weights)",
        )
    return int(json.loads(config.read_text())["d_model"])


def clean_caption(caption: str) -> str:
    """The Wan tokenizer's cleaning: HTML entities unescaped (twice), whitespace runs
    collapsed to one space, ends stripped (its ``ftfy`` mojibake repair is not applied)."""
    return " ".join(html.unescape(html.unescape(str(caption))).split())


def _fill_device_constructors() -> None:
    """Fill torch's cached table of factory functions before transformers loads a model.

    transformers 5 swaps ``torch.linspace`` for a wrapper while it builds a model on the meta
    device; if ``with torch.device(...)`` first fills its (cached) table of factory
    functions then, the table keeps the wrapper, and from then on in this process
    ``torch.linspace`` ignores every device context (a generator built under
    ``torch.device("meta")`` got a CPU parameter). Filled now, it holds the real function.
    """
    from torch.utils import _device

    fill = getattr(_device, "_device_constructors", None)
    if fill is not None:
        fill()


#: Files of which a tokenizer folder has at least one (fast, sentencepiece, config).
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


class UMT5TextEncoder(nn.Module):
    """umT5 encoder through ``transformers`` from a local path; mean over caption tokens.

    ``path`` holds a ``UMT5EncoderModel`` (e.g. ``text_encoder/`` of
    ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``); ``tokenizer_path`` its tokenizer (default: the
    sibling ``tokenizer/`` folder when present, else ``path``). Captions are cleaned as the
    Wan tokenizer does (:func:`clean_caption`) and truncated to ``max_length`` tokens
    (released 128) with the end-of-sequence token; the mean runs over those tokens (the
    released encoder trims each output to its length before the mean), so padding never
    changes a caption's embedding.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        tokenizer_path: str | Path | None = None,
        max_length: int = UMT5_MAX_LENGTH,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        path = Path(path)
        if not path.exists():
            raise _missing(
                path,
                "umT5 encoder weights",
                "pass umt5_path= the text_encoder/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers "
                "(or google/umt5-xxl), or leave it None to sample without captions",
            )
        umt5_width(path)  # a folder with the model's config.json
        if tokenizer_path is None:
            sibling = path.parent / "tokenizer"
            tokenizer_path = sibling if sibling.is_dir() else path
        tokenizer_path = Path(tokenizer_path)
        if not any((tokenizer_path / name).is_file() for name in _TOKENIZER_FILES):
            raise _missing(
                tokenizer_path,
                "umT5 tokenizer",
                "pass tokenizer_path= the tokenizer/ folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            )
        transformers = _require("transformers")
        _fill_device_constructors()
        self.path, self.tokenizer_path = str(path), str(tokenizer_path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(tokenizer_path), local_files_only=True
        )
        self.model = transformers.UMT5EncoderModel.from_pretrained(
            str(path), dtype=dtype, local_files_only=True
        )
        self.model.eval().requires_grad_(False)
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        """``captions`` (b strings) -> ``"b dt"`` float32."""
        if isinstance(captions, str):
            captions = [captions]
        device = next(self.model.parameters()).device
        tok = self.tokenizer(
            [clean_caption(c) for c in captions],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            add_special_tokens=True,
        ).to(device)
        hidden = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        h = hidden.last_hidden_state.float()
        mask = tok.attention_mask.to(h.dtype).unsqueeze(-1)
        return (h * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


@dataclass(frozen=True)
class HashedTextConfig:
    """The built-in caption encoder: hashed words and word pairs, one learned vector each."""

    dim: int = 64  # dt: the generator's text_embed_dim
    buckets: int = 4096  # hash buckets; captions use a few hundred distinct words and pairs
    bigrams: bool = True  # word pairs too: "pans left" is not "left ... pans"

    def __post_init__(self) -> None:
        for name in ("dim", "buckets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"HashedTextConfig.{name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HashedTextConfig:
        return cls(**d)


_WORD = re.compile(r"[a-z0-9]+")


def caption_features(caption: str, config: HashedTextConfig) -> list[int]:
    """Bucket ids of a caption's lower-cased words and (with ``bigrams``) adjacent word pairs.

    CRC-32 of the UTF-8 text modulo ``buckets``: the same ids in every process and Python
    run (the built-in ``hash`` of a string is salted per process).
    """
    words = _WORD.findall(str(caption).lower())
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(words)] if config.bigrams else []
    grams = words + pairs
    return [zlib.crc32(g.encode()) % config.buckets for g in grams]


class HashedTextEncoder(nn.Module):
    """Captions -> ``"b dt"``: the mean of the learned vectors of :func:`caption_features`.

    A caption without words (``""``) gives zeros, the null embedding of caption dropout.
    Trained jointly with the generator; nothing is downloaded.
    """

    def __init__(self, config: HashedTextConfig = HashedTextConfig()) -> None:
        super().__init__()
        self.config = config
        # N(0, 1) vectors (the embedding default): a caption's mean has a norm of order
        # sqrt(dim / words), so the generator's text projection gets gradients from step 0
        self.bag = nn.EmbeddingBag(config.buckets, config.dim, mode="mean")

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        if isinstance(captions, str):
            captions = [captions]
        ids = [caption_features(c, self.config) for c in captions]
        device = self.bag.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        lengths = torch.tensor([0] + [len(row) for row in ids[:-1]], dtype=torch.long)
        offsets = torch.cumsum(lengths, 0).to(device)
        return self.bag(flat, offsets)


def save_hashed_text_encoder(module: HashedTextEncoder, folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``."""
    return _save_conditioner(module, module.config, folder, "hashed_text_encoder")


def load_hashed_text_encoder(folder: str | Path) -> HashedTextEncoder:
    """Load a folder written by :func:`save_hashed_text_encoder` (strict)."""
    return _load_conditioner(
        folder, HashedTextEncoder, HashedTextConfig, "save_hashed_text_encoder"
    )


def precomputed_text(
    embeddings: Sequence[np.ndarray | torch.Tensor | None],
    dim: int,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Stack per-sample caption embeddings into ``"b dt"``.

    Each entry is ``"dt"`` (pooled), ``"l dt"`` (per token; mean-pooled here), or None
    (no caption: the null embedding).
    """
    rows = []
    for i, e in enumerate(embeddings):
        if e is None:
            rows.append(torch.zeros(dim))
            continue
        x = torch.as_tensor(np.asarray(e) if not isinstance(e, torch.Tensor) else e).float()
        if x.dim() == 2:
            x = x.mean(dim=0)
        if x.dim() != 1 or x.shape[0] != dim:
            raise ValueError(
                f"caption embedding {i} has shape {tuple(x.shape)}; expected ({dim},) pooled or "
                f"(tokens, {dim}) — was it computed with the same text encoder?"
            )
        rows.append(x)
    if not rows:
        raise ValueError("precomputed_text got no embeddings")
    return torch.stack(rows).to(device)


def null_text(
    batch: int, dim: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> torch.Tensor:
    """The null caption embedding: zeros ``"b dt"`` (the generator's text projection bias)."""
    return torch.zeros(batch, dim, device=device, dtype=dtype)


def text_dropout_mask(
    batch: int,
    drop_prob: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``"b"`` bool, True where the caption is kept (probability ``1 - drop_prob``)."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
    return torch.rand(batch, generator=generator, device=device) >= drop_prob


def drop_text(text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Replace the rows of ``text: "b dt"`` where ``keep: "b"`` is False by the null embedding."""
    if keep.shape != text.shape[:1]:
        raise ValueError(f"keep must be 'b' = ({text.shape[0]},), got {tuple(keep.shape)}")
    return torch.where(keep[:, None], text, torch.zeros((), dtype=text.dtype, device=text.device))
