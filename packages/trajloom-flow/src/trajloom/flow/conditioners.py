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
  conditioner): frames in [-1, 1], bilinear resize by 1/4 (832x480 -> 208x120), posterior
  mean normalized by the VAE's ``latents_mean``/``latents_std`` (what the Wan repository's
  ``WanVAE.encode`` returns), ``"b c t h w" -> "b t (h w) c"`` (21 x 390 x 16).

Captions (``"b dt"``):

* :class:`HashedTextEncoder` — the built-in caption encoder (ours), trained jointly with
  the generator: a mean over learned embeddings of the caption's hashed words and word
  pairs (an embedding bag); the empty caption is the null embedding;
* :func:`precomputed_text` — embeddings stored with the data (shard member ``text.npy``);
* :class:`UMT5TextEncoder` — umT5 through ``transformers`` from a local path, mean over
  the caption's tokens (released ``encode_text_t5_pooled``, max length 128);
* :func:`null_text` / :func:`drop_text` — the null (all-zero) embedding and caption
  dropout for unconditional training (released ``dropout_prob`` 0.1).
"""

from __future__ import annotations

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
    "HashedTextConfig",
    "HashedTextEncoder",
    "LightVideoEncoder",
    "LightVideoEncoderConfig",
    "TextEncoder",
    "UMT5TextEncoder",
    "VideoEncoder",
    "WanVideoEncoder",
    "caption_features",
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
