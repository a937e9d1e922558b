"""Fixtures for every test folder: output folders that fail like real disks do, and a
trained set that follows pins."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# apps/train launches one process per core by default (--procs auto); the tests train in
# one process unless they ask for more (tests/apps/test_train_launch.py tests the launch).
os.environ.setdefault("TRAJLOOM_TRAIN_PROCS", "1")


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})")


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder no process can write into: a read-only tmpfs as root, else mode 0500."""
    target = tmp_path / "read-only"
    if os.geteuid() == 0:
        _mount_tmpfs(target, "ro,size=1m")
        yield target
        _umount(target)
    else:
        target.mkdir()
        target.chmod(0o500)
        yield target
        target.chmod(0o700)


@pytest.fixture
def full_disk_dir(tmp_path) -> Iterator[Path]:
    """A writable folder on a 256 KiB tmpfs (root only; skipped elsewhere with the reason)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    target = tmp_path / "full-disk"
    _mount_tmpfs(target, "size=256k")
    yield target
    _umount(target)


@pytest.fixture(scope="session")
def pinnable_trained_set(tmp_path_factory) -> Path:
    """A trained-set folder whose futures can be steered onto pins: the tiny pipeline of
    tests/flow/test_guidance.py (its ``trained`` fixture, where pins are met within 1 px;
    128x96, stride 16, 9 + 9 frames, no visibility head), saved as apps/train saves one.

    The module is loaded by path, as tests/faults loads tests/apps/conftest.py: test
    folders are not packages.
    """
    path = Path(__file__).parent / "flow" / "test_guidance.py"
    spec = importlib.util.spec_from_file_location("guidance_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe, _hist, _vis = module.trained.__wrapped__()  # the fixture's own function
    return pipe.save_pretrained(tmp_path_factory.mktemp("pinnable") / "trained")


# ----------------------------------------------------------------------------- released models
# Tiny stand-ins for the released conditioners, built here and saved in their published
# layouts (the Wan2.1 Diffusers repository: vae/, text_encoder/, tokenizer/; the original
# single file Wan2.1_VAE.pth). Nothing is downloaded; the weights are random (seeded).

#: Words of the tiny umT5 tokenizer: what the synthetic captions and the tests say.
# fmt: off
TINY_UMT5_WORDS = [
    "a", "the", "and", "of", "in", "on", "to", "with", "is", "are", "camera", "pans", "tilts",
    "zooms", "static", "still", "left", "right", "up", "down", "slowly", "quickly", "moves",
    "move", "ball", "balls", "red", "green", "blue", "square", "circle", "dog", "runs",
    "across", "scene", "background", "foreground", "object", "objects", ",", ".",
]
# fmt: on


def _tiny_wan_vae(folder: Path, seed: int) -> None:
    """``folder/vae/`` (diffusers) and ``folder/Wan2.1_VAE.pth``: the Wan2.1 VAE's layout
    (z_dim 16, four levels, temporal downsampling in the last two) at base width 8."""
    import torch
    from diffusers import AutoencoderKLWan

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        num_res_blocks=1,
        latents_mean=(torch.randn(16, generator=g) * 0.5).tolist(),
        latents_std=(torch.rand(16, generator=g) + 0.5).tolist(),
    )
    vae.save_pretrained(folder / "vae")
    torch.save(vae.state_dict(), folder / "Wan2.1_VAE.pth")


def _tiny_umt5(folder: Path, seed: int) -> None:
    """``folder/text_encoder/`` (a 2-layer UMT5EncoderModel of width 24) and
    ``folder/tokenizer/`` (a word-level fast tokenizer that appends ``</s>`` like T5's).
    Width 24: unlike any preset's ``text_embed_dim``, so code that does not take the width
    from the encoder fails."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate([*specials, *TINY_UMT5_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder / "tokenizer")
    config = UMT5Config(
        vocab_size=len(vocab),
        d_model=24,
        d_kv=6,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    torch.manual_seed(seed)
    UMT5EncoderModel(config).save_pretrained(folder / "text_encoder")


@pytest.fixture(scope="session")
def tiny_wan21(tmp_path_factory) -> Path:
    """A folder laid out like ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (``vae/``,
    ``text_encoder/``, ``tokenizer/``) plus ``Wan2.1_VAE.pth``, with tiny random models.
    Skips where the ``trajloom-flow[wan]`` extra is not installed."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("wan21")
    _tiny_wan_vae(folder, seed=0)
    _tiny_umt5(folder, seed=1)
    return folder
