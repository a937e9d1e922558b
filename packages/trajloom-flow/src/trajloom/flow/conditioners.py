"""Conditioners: history video and caption -> the generator's context tensors (paper §3.3, A.2).

Nothing here downloads: the released conditioners load from local paths only, and say
which path is missing and what to put there.

Video context (``"b t h w 3"`` history frames -> ``"b t' n cv"`` latents on the token grid):

* :class:`LightVideoEncoder` — a small trainable conv net (ours): frames resized to the
  working resolution / ``resize_factor``, a strided 2-D conv stack down to the token grid
  (``Hg x Wg``), then a causal temporal conv of stride 4 whose first output sees only the
  first frame (``1 + (T - 1) / 4`` steps: 81 -> 21, the Wan VAE's temporal layout).
* :class:`WanVideoEncoder` — the Wan2.1 VAE through ``diffusers`` (the released
  conditioner): frames in [-1, 1], bilinear resize by 1/4 (832x480 -> 208x120), posterior
  mean normalized by the VAE's ``latents_mean``/``latents_std`` (what the Wan repository's
  ``WanVAE.encode`` returns), ``"b c t h w" -> "b t (h w) c"`` (21 x 390 x 16).

Captions (``"b dt"``):

* :func:`precomputed_text` — embeddings stored with the data (shard member ``text.npy``);
* :class:`UMT5TextEncoder` — umT5 through ``transformers`` from a local path, mean over
  the caption's tokens (released ``encode_text_t5_pooled``, max length 128);
* :func:`null_text` / :func:`drop_text` — the null (all-zero) embedding and caption
  dropout for unconditional training (released ``dropout_prob`` 0.1).
"""

from __future__ import annotations

import importlib
import json
import math
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
    "LightVideoEncoder",
    "LightVideoEncoderConfig",
    "TextEncoder",
    "UMT5TextEncoder",
    "VideoEncoder",
    "WanVideoEncoder",
    "drop_text",
    "frames_to_unit",
    "load_light_video_encoder",
    "null_text",
    "precomputed_text",
    "save_light_video_encoder",
    "text_dropout_mask",
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
            "`pip install 'trajloom-flow[wan]'` (diffusers and transformers)"
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

    Per frame: ``log2(stride / resize_factor)`` blocks of ``Conv2d(3x3, stride 2) + SiLU``
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
        x = frames_to_unit(frames, c.input_size).to(self.out.weight.dtype)
        b = x.shape[0]
        x = self.spatial(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
        # causal grouping: latent step 0 sees the first frame only
        x = torch.cat([x[:, :, :1].expand(-1, -1, c.temporal_factor - 1, -1, -1), x], dim=2)
        x = F.silu(self.temporal(x))
        return self.out(rearrange(x, "b c t h w -> b t (h w) c"))


def save_light_video_encoder(module: LightVideoEncoder, folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(module.config.to_dict())
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(
        state,
        str(folder / "model.safetensors"),
        metadata={"trajloom": "light_video_encoder", "config": config_json},
    )
    (folder / "config.json").write_text(config_json + "\n")
    return folder


def load_light_video_encoder(folder: str | Path) -> LightVideoEncoder:
    """Load a folder written by :func:`save_light_video_encoder` (strict)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("model.safetensors", "config.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} not found; expected a folder written by save_light_video_encoder"
            )
    config = LightVideoEncoderConfig.from_dict(json.loads((folder / "config.json").read_text()))
    module = LightVideoEncoder(config)
    module.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return module.eval()


# -----------------------------------------------------------------------------
# Wan2.1 VAE (released video conditioner)
# -----------------------------------------------------------------------------


def _missing(path: Path, what: str, hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {path}: {hint}. Nothing is downloaded.")


class WanVideoEncoder(nn.Module):
    """The Wan2.1 VAE encoder as the released video conditioner, from a local path.

    ``path`` is a diffusers-format folder (``config.json`` + weights, e.g. the ``vae/``
    folder of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``) or a single weights file such as the
    original ``Wan2.1_VAE.pth`` (read with ``AutoencoderKLWan.from_single_file``).
    """

    # Buffers registered in __init__ (nn.Module.__getattr__ would type them Tensor | Module).
    latents_mean: torch.Tensor
    latents_std: torch.Tensor

    def __init__(
        self,
        path: str | Path,
        *,
        grid: GridSpec = GridSpec(),
        resize_factor: int = 4,
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
        if grid.stride != 8 * resize_factor:
            raise ValueError(
                f"the Wan VAE downsamples by 8, so resize_factor * 8 must equal the grid "
                f"stride {grid.stride}; got resize_factor={resize_factor}"
            )
        diffusers = _require("diffusers")
        cls = diffusers.AutoencoderKLWan
        if path.is_dir():
            self.vae = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        else:
            self.vae = cls.from_single_file(str(path), torch_dtype=dtype, local_files_only=True)
        self.vae.eval().requires_grad_(False)
        cfg = self.vae.config
        self.register_buffer(
            "latents_mean", torch.tensor(cfg.latents_mean).float(), persistent=False
        )
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).float(), persistent=False)
        self.size = (grid.height // resize_factor, grid.width // resize_factor)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``"b t h w 3"`` -> ``"b t' n 16"`` normalized Wan latents (``t' = 1 + (t - 1) / 4``)."""
        dtype = next(self.vae.parameters()).dtype
        x = frames_to_unit(frames.to(self.latents_mean.device), self.size).to(dtype)
        mu = self.vae.encode(x).latent_dist.mean.float()
        mean = self.latents_mean.view(1, -1, 1, 1, 1)
        std = self.latents_std.view(1, -1, 1, 1, 1)
        return rearrange((mu - mean) / std, "b c t h w -> b t (h w) c")


# -----------------------------------------------------------------------------
# Captions
# -----------------------------------------------------------------------------


class UMT5TextEncoder(nn.Module):
    """umT5 encoder through ``transformers`` from a local path; mean over caption tokens.

    ``path`` holds a ``UMT5EncoderModel`` (e.g. ``text_encoder/`` of
    ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``); ``tokenizer_path`` its tokenizer (default: the
    sibling ``tokenizer/`` folder when present, else ``path``). Whitespace is collapsed
    as the Wan tokenizer does; captions are truncated to ``max_length`` tokens (released
    128); the mean runs over the non-padding tokens only (the released encoder trims
    each output to its length before the mean).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        tokenizer_path: str | Path | None = None,
        max_length: int = 128,
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
        if tokenizer_path is None:
            sibling = path.parent / "tokenizer"
            tokenizer_path = sibling if sibling.is_dir() else path
        tokenizer_path = Path(tokenizer_path)
        if not tokenizer_path.exists():
            raise _missing(tokenizer_path, "umT5 tokenizer", "pass tokenizer_path=")
        transformers = _require("transformers")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(tokenizer_path), local_files_only=True
        )
        self.model = transformers.UMT5EncoderModel.from_pretrained(
            str(path), torch_dtype=dtype, local_files_only=True
        )
        self.model.eval().requires_grad_(False)
        self.max_length = max_length

    @torch.no_grad()
    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        """``captions`` (b strings) -> ``"b dt"`` float32."""
        if isinstance(captions, str):
            captions = [captions]
        texts = [" ".join(str(c).split()) for c in captions]
        device = next(self.model.parameters()).device
        tok = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            add_special_tokens=True,
        ).to(device)
        hidden = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        h = hidden.last_hidden_state.float()
        mask = tok.attention_mask.to(h.dtype).unsqueeze(-1)
        return (h * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


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
