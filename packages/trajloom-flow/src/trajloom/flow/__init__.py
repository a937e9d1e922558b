"""TrajLoom-Flow (paper §3.3): the rectified-flow generator over TrajLoom-VAE latents, its
objectives, samplers, visibility head, conditioners, baselines and the sampling pipeline.

* generator: :class:`GeneratorConfig`, :class:`TrajLoomGenerator`, :class:`FlowCondition`
* objectives: :mod:`.path` (anchored source, linear path), :mod:`.losses` (eq. 9, time
  mixture), :mod:`.onpolicy` (§3.3.3)
* samplers: :func:`sample_euler`, :func:`sample_dopri5` and time grids
* steerable futures: :class:`Pin` (:mod:`.pins`), guided sampling :func:`guided_velocity`
  (:mod:`.guidance`), ``TrajLoomPipeline(...)(..., constraints=pins)``
* visibility head: :class:`VisibilityPredictor`
* conditioners: :class:`LightVideoEncoder`, :class:`WanVideoEncoder`, :class:`UMT5TextEncoder`
* pipeline: :class:`TrajLoomPipeline`; baselines: :func:`static_future`,
  :func:`constant_velocity_future`, :func:`linear_future`, ``PipelineConfig.whn()``
* forecasters of every kind behind one protocol, method specs, checkpoint discovery:
  :mod:`trajloom.flow.forecast`
"""

from trajloom.flow.baselines import (
    BaselineOutput,
    clip_to_image,
    constant_velocity_future,
    linear_future,
    static_future,
)
from trajloom.flow.conditioners import (
    HashedTextConfig,
    HashedTextEncoder,
    LightVideoEncoder,
    LightVideoEncoderConfig,
    UMT5TextEncoder,
    WanVideoEncoder,
    drop_text,
    load_light_video_encoder,
    null_text,
    precomputed_text,
    save_light_video_encoder,
    text_dropout_mask,
)
from trajloom.flow.config import GENERATOR_PRESETS, GeneratorConfig, generator_preset
from trajloom.flow.guidance import (
    GuidanceConfig,
    anchored_velocity,
    grid_smoother,
    guided_velocity,
    hidden_loss,
    pin_loss,
)
from trajloom.flow.io import load_generator, load_visibility, save_pretrained
from trajloom.flow.losses import (
    FlowLossConfig,
    FlowLossOutput,
    flow_matching_loss,
    sample_flow_time,
    token_squared_error,
    token_weights,
    weighted_token_mse,
)
from trajloom.flow.model import FlowCondition, TrajLoomGenerator, latent_visibility
from trajloom.flow.onpolicy import (
    OnPolicyConfig,
    OnPolicyOutput,
    endpoint_targets,
    onpolicy_loss,
    select_samples,
    sub_batch_indices,
)
from trajloom.flow.path import anchor_source, draw_source, interpolate, velocity_target
from trajloom.flow.pins import (
    Pin,
    PinError,
    check_pins,
    parse_pin,
    pin_markers,
    pins_from_json,
    pins_to_json,
    resolve_pins,
)
from trajloom.flow.pipeline import PipelineConfig, PipelineOutput, TrajLoomPipeline, whn_condition
from trajloom.flow.released import from_released, visibility_from_released
from trajloom.flow.samplers import (
    SolverProgress,
    SolverStats,
    logit_time_grid,
    sample_dopri5,
    sample_euler,
    uniform_time_grid,
)
from trajloom.flow.visibility import (
    VisibilityConfig,
    VisibilityPredictor,
    predict_visibility,
    upsample_visibility,
    visibility_loss,
    visibility_targets,
)

__all__ = [
    "GENERATOR_PRESETS",
    "BaselineOutput",
    "FlowCondition",
    "FlowLossConfig",
    "FlowLossOutput",
    "GeneratorConfig",
    "GuidanceConfig",
    "HashedTextConfig",
    "HashedTextEncoder",
    "LightVideoEncoder",
    "LightVideoEncoderConfig",
    "OnPolicyConfig",
    "OnPolicyOutput",
    "Pin",
    "PinError",
    "PipelineConfig",
    "PipelineOutput",
    "SolverProgress",
    "SolverStats",
    "TrajLoomGenerator",
    "TrajLoomPipeline",
    "UMT5TextEncoder",
    "VisibilityConfig",
    "VisibilityPredictor",
    "WanVideoEncoder",
    "anchor_source",
    "anchored_velocity",
    "check_pins",
    "clip_to_image",
    "constant_velocity_future",
    "draw_source",
    "drop_text",
    "endpoint_targets",
    "flow_matching_loss",
    "from_released",
    "generator_preset",
    "grid_smoother",
    "guided_velocity",
    "hidden_loss",
    "interpolate",
    "latent_visibility",
    "linear_future",
    "load_generator",
    "load_light_video_encoder",
    "load_visibility",
    "logit_time_grid",
    "null_text",
    "onpolicy_loss",
    "parse_pin",
    "pin_loss",
    "pin_markers",
    "pins_from_json",
    "pins_to_json",
    "precomputed_text",
    "predict_visibility",
    "resolve_pins",
    "sample_dopri5",
    "sample_euler",
    "sample_flow_time",
    "save_light_video_encoder",
    "save_pretrained",
    "select_samples",
    "static_future",
    "sub_batch_indices",
    "text_dropout_mask",
    "token_squared_error",
    "token_weights",
    "uniform_time_grid",
    "upsample_visibility",
    "velocity_target",
    "visibility_from_released",
    "visibility_loss",
    "visibility_targets",
    "weighted_token_mse",
    "whn_condition",
]
__version__ = "0.1.0"
