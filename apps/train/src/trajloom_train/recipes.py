"""Recipes: plain functions returning a resolved :class:`~trajloom_train.config.Recipe`.

* ``paper`` — the paper's hyperparameters (appendix A.1–A.3) and the released configs
  (``zewei-Zhang/TrajLoom`` ``configs/trajloom_vae_config.json``,
  ``configs/trajloom_generator_config.json``, ``configs/vis_predictor_config.json``); every
  value says where it comes from, and values no source states are marked "not stated".
* ``quick`` — the whole pipeline on synthetic scenes on 2 CPU cores in under 15 minutes.
* ``ci`` — a smaller ``quick`` that runs end to end in about a minute (tests).
* ``real`` — ``quick`` on shards of real videos tracked by ``apps/bench build``, evaluated
  on held-out windows (README "Real videos"; 30 minutes on 2 CPU cores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from trajloom.flow.config import generator_preset
from trajloom.flow.losses import FlowLossConfig
from trajloom.flow.onpolicy import OnPolicyConfig
from trajloom.flow.visibility import VisibilityConfig
from trajloom.vae.config import vae_preset
from trajloom.vae.losses import VAELossConfig
from trajloom_train.config import (
    ConditioningConfig,
    DataConfig,
    EvalConfig,
    OptimConfig,
    Recipe,
    StageConfig,
    StatsConfig,
    VisTrainConfig,
    resolve,
)

__all__ = ["RECIPES", "ci", "get_recipe", "paper", "quick", "real"]


def paper() -> Recipe:
    """The paper's training (4 x H100 per the paper; runs on any number of GPUs)."""
    return resolve(
        Recipe(
            name="paper",
            seed=42,  # released configs: "seed": 42
            precision="bf16",  # paper A.2 "bf16 mixed precision"; released mixed_precision bf16
            text_dropout=0.1,  # released text_encoder.dropout_prob
            activation_checkpointing=True,  # paper A.2 "checkpointing for activation"
            compile_blocks=True,  # CUDA only: 1.67x faster generator step (BENCHMARKS.md GPU)
            # Paper §3.3: history video and caption context. Built in by default (a
            # LightVideoEncoder on cached low-resolution history frames and a hashed caption
            # encoder, both trained with the generator; no download); `--video-encoder` /
            # `--text-encoder` cache the released Wan2.1 VAE latents / umT5 embeddings instead.
            conditioning=ConditioningConfig(video_hidden=64, text_dim=256, text_buckets=16384),
            # Paper §4.1: 832x480 (480p as WAN), stride-32 grid, 81 + 81 frames: DataConfig's
            # defaults (trajloom.encoding's DEFAULT_GRID and windows). Training data are
            # MagicData shards (pass --data); without them the synthetic scenes are used.
            data=DataConfig(scene_pool=0),
            vae_model=vae_preset("paper"),  # released trajloom_vae.config = paper A.1
            # Paper A.1 / released train: vel_lambda 0.1, neighbor_lambda 0.2, beta 5e-5;
            # hops (1, 2, 4) with weights (1, 0.5, 0.25) are trajloom.vae's reading of A.1.
            vae_loss=VAELossConfig(),
            vae=StageConfig(
                # Steps: not stated (released num_epochs 4000 is an upper bound); we use the
                # generator's 100k.
                steps=100_000,
                # Released train: batch_size 4 per GPU, gradient_accumulation_steps 2; the GPU
                # count is not stated for the VAE: we assume the 4 GPUs of A.2 -> 4 x 2 x 4 = 32.
                batch_size=32,
                micro_batch_size=4,
                optim=OptimConfig(
                    lr=2e-5,  # released train.learning_rate
                    betas=(0.9, 0.999),  # released train.betas
                    weight_decay=0.0,  # released train.weight_decay
                    clip_grad_norm=1.0,  # released train.clip_grad_norm
                    schedule="constant",  # not stated (no schedule in the released config)
                ),
                ema_decay=0.0,  # not stated; no EMA for the VAE
                log_every=10,  # released log_every
                val_every=100,  # released val_every
                save_every=1000,  # released save_every
            ),
            stats=StatsConfig(clips=4096, batch_size=8),  # not stated ("the training set")
            generator=generator_preset("paper"),  # released generator section = paper A.2
            flow_loss=FlowLossConfig(),  # released train: fm_* , t_small_*, x0_* (A.2)
            flow=StageConfig(
                steps=100_000,  # paper A.2 "we trained 100k steps in total"
                batch_size=128,  # paper A.2 "effective batch size of 128"
                micro_batch_size=32,  # paper A.2 "batch size 32 on 4 H100"; released 32
                optim=OptimConfig(
                    lr=6e-5,  # released train.learning_rate (paper A.2, value lost in the text)
                    weight_decay=0.0,  # paper A.2 "weight decay 0"; released 0.0
                    clip_grad_norm=1.0,  # paper A.2; released clip_grad_norm 1.0
                    schedule="constant",  # not stated (no schedule in the released config)
                ),
                ema_decay=0.9999,  # not stated; ours, for sampling
                log_every=10,  # released log_every
                val_every=200,  # released val_every
                preview_every=400,  # released preview_every
                save_every=8000,  # released save_every
            ),
            # Paper A.3: sub-batch of 8; K, grid, δ and the weights were lost in the text
            # extraction: trajloom.flow's documented defaults.
            onpolicy_loss=OnPolicyConfig(),
            onpolicy=StageConfig(
                steps=10_000,  # not stated; ours
                batch_size=128,  # A.3 "keeping other settings unchanged"
                micro_batch_size=32,
                optim=OptimConfig(
                    lr=1e-5,  # A.3 states a lower rate whose value was lost; ours
                    weight_decay=0.0,
                    clip_grad_norm=1.0,
                    schedule="constant",
                ),
                ema_decay=0.9999,  # not stated; ours
                log_every=10,
                val_every=200,
                preview_every=400,
                save_every=2000,
            ),
            # Released vis_predictor_config.json: predictor section, train and lr_schedule.
            visibility_model=VisibilityConfig(hidden=64, depth=3, kernel_size=3),
            vis_train=VisTrainConfig(segments=("hist", "fut"), pos_weight=0.0),
            vis=StageConfig(
                steps=20_000,  # released max_steps
                batch_size=4,  # released batch_size (GPU count not stated: one assumed)
                micro_batch_size=4,
                optim=OptimConfig(
                    lr=3e-4,  # released lr
                    weight_decay=0.01,  # released weight_decay
                    clip_grad_norm=1.0,  # released grad_clip_norm
                    schedule="cosine",  # released lr_schedule.schedule
                    warmup_steps=500,  # released lr_schedule.warmup_steps
                    min_lr=3e-5,  # released lr_schedule.min_lr
                ),
                ema_decay=0.0,
                log_every=50,  # released log_every
                val_every=500,  # released eval_every
                save_every=2000,  # released save_every
            ),
            # Paper §4 / D.4: Euler with 10 steps by default; FVMD windows of 16 frames (and
            # the released README's 24). Samples per clip for best-of-K: not stated; ours.
            eval=EvalConfig(clips=64, samples=4, solver="euler", steps=10, fvmd_clip_len=16),
        )
    )


def quick() -> Recipe:
    """All stages on synthetic scenes, 2 CPU cores, under 15 minutes (see the README)."""
    vae = vae_preset("tiny")  # hidden 64, 4 + 4 blocks, 8 latent channels
    gen = generator_preset("tiny", hidden_size=96, num_heads=4, depth=4)
    return resolve(
        Recipe(
            name="quick",
            seed=0,
            precision="bf16",
            activation_checkpointing=False,
            # Built-in video and caption context, small: 4 x 4 px per token (32 x 32 frames).
            conditioning=ConditioningConfig(video_hidden=32, text_dim=64, text_buckets=4096),
            # 128 x 128 at stride 16: an 8 x 8 grid (64 tracks, the smallest FVMD scores with
            # its 5 x 5-point cubes), 17 + 17 frames (5 latent steps each).
            # The "lively" world (swings, gravity, turns, handheld shake): in the rigid
            # default world motion over 17 frames is so nearly linear that constant
            # velocity is close to exact and no learned model can beat it (BENCHMARKS.md).
            data=DataConfig(
                width=128,
                height=128,
                stride=16,
                history=17,
                future=17,
                scene_pool=1024,
                dynamics="lively",
            ),
            vae_model=vae,
            # The query-pixel consistency terms: the per-pixel ones cost 3x the step time here.
            vae_loss=VAELossConfig(consistency_pixels="query"),
            # Measured CPU time per step (1 thread): VAE 0.4 s, flow 0.8 s, on-policy 1.6 s.
            vae=StageConfig(
                # 600 steps: the VAE gates FVMD. On the lively world its reconstruction of
                # the true future at step 150 (1.3 px) already scores an FVMD (370) close to
                # constant velocity's (387); see BENCHMARKS.md.
                steps=600,
                batch_size=8,
                micro_batch_size=8,
                optim=OptimConfig(lr=2e-3, warmup_steps=30, schedule="cosine", min_lr=1e-4),
                ema_decay=0.99,
                log_every=10,
                val_every=150,
                save_every=150,
            ),
            stats=StatsConfig(clips=256, batch_size=64),
            generator=gen,
            flow_loss=FlowLossConfig(),
            flow=StageConfig(
                steps=800,
                batch_size=16,
                micro_batch_size=16,
                optim=OptimConfig(lr=1e-3, warmup_steps=40, schedule="cosine", min_lr=5e-5),
                ema_decay=0.995,
                log_every=10,
                val_every=200,
                preview_every=400,
                save_every=200,
            ),
            onpolicy_loss=OnPolicyConfig(sub_batch=8),
            onpolicy=StageConfig(
                steps=60,
                batch_size=16,
                micro_batch_size=16,
                optim=OptimConfig(lr=1e-4, schedule="constant"),
                ema_decay=0.95,
                log_every=10,
                val_every=30,
                save_every=30,
            ),
            visibility_model=VisibilityConfig(hidden=32, depth=3, kernel_size=3),
            vis_train=VisTrainConfig(),
            vis=StageConfig(
                steps=300,
                batch_size=32,
                micro_batch_size=32,
                optim=OptimConfig(lr=3e-3, weight_decay=0.01, warmup_steps=20, schedule="cosine"),
                log_every=10,
                val_every=100,
                save_every=100,
            ),
            eval=EvalConfig(clips=32, samples=4, steps=10, preview_clips=2, fvmd_clip_len=16),
        )
    )


def ci() -> Recipe:
    """``quick`` shrunk to about a minute: 128 x 64 (32 tracks), 9 + 9 frames, tens of steps."""
    base = quick()
    return resolve(
        Recipe(
            name="ci",
            seed=0,
            precision=base.precision,
            conditioning=ConditioningConfig(video_hidden=8, text_dim=16, text_buckets=1024),
            data=DataConfig(
                width=128, height=64, stride=16, history=9, future=9, scene_pool=64, val_clips=4
            ),
            vae_model=vae_preset("tiny", hidden_size=32, num_heads=2, pos_embed_dim=8),
            vae_loss=base.vae_loss,
            vae=StageConfig(
                steps=20,
                batch_size=8,
                micro_batch_size=8,
                optim=OptimConfig(lr=2e-3, warmup_steps=2),
                ema_decay=0.9,
                log_every=5,
                val_every=10,
                save_every=10,
            ),
            stats=StatsConfig(clips=16, batch_size=16),
            generator=generator_preset("tiny", hidden_size=32, num_heads=2, depth=2),
            flow=StageConfig(
                steps=20,
                batch_size=8,
                micro_batch_size=8,
                optim=OptimConfig(lr=1e-3, warmup_steps=2),
                ema_decay=0.9,
                log_every=5,
                val_every=10,
                preview_every=10,
                save_every=10,
            ),
            onpolicy_loss=OnPolicyConfig(sub_batch=4, steps=2),
            onpolicy=StageConfig(
                steps=4,
                batch_size=8,
                micro_batch_size=8,
                optim=OptimConfig(lr=1e-4),
                ema_decay=0.5,
                log_every=2,
                val_every=4,
                save_every=4,
            ),
            visibility_model=VisibilityConfig(hidden=16, depth=1, kernel_size=3),
            vis=StageConfig(
                steps=10,
                batch_size=8,
                micro_batch_size=8,
                optim=OptimConfig(lr=3e-3),
                log_every=5,
                val_every=5,
                save_every=5,
            ),
            eval=EvalConfig(clips=4, samples=2, steps=4, preview_clips=1, fvmd_clip_len=8),
        )
    )


def real() -> Recipe:
    """``quick``'s models and stages on real videos tracked by ``apps/bench build`` (README
    "Real videos"): 192 x 112 at stride 16 (12 x 7 = 84 tracks), 17 + 17 frames cut every
    4 frames from 68-frame bench samples; 35% of the samples (by key) held out and
    evaluated with K = 4 futures per window. Needs ``--data`` (the bench's shards)."""
    base = quick()
    return resolve(
        replace(
            base,
            name="real",
            data=DataConfig(
                source="synthetic",  # --data switches to the shards
                width=192,
                height=112,
                stride=16,
                history=17,
                future=17,
                window_stride=4,
                holdout=0.35,
                shuffle_buffer=64,
            ),
            # Fewer steps than quick: the windows are few (tens), and 30 minutes on 2 cores
            # include tracking the videos.
            vae=replace(base.vae, steps=400),
            flow=replace(base.flow, steps=600),
            eval=EvalConfig(clips=64, samples=4, steps=10, preview_clips=0, fvmd_clip_len=16),
        )
    )


RECIPES: dict[str, Callable[[], Recipe]] = {
    "quick": quick,
    "paper": paper,
    "ci": ci,
    "real": real,
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; an unknown name raises ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]()
