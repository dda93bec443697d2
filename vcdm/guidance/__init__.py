"""Guidance: functions from denoiser to denoiser."""

from vcdm.guidance.cfg import classifier_free, drop_condition, null_cond
from vcdm.guidance.classifier import classifier_guidance
from vcdm.guidance.clip import clip_guidance, clip_target, image_embed_fn
from vcdm.guidance.compose import compose
from vcdm.guidance.threshold import dynamic_threshold, static_threshold

__all__ = [
    "classifier_free",
    "classifier_guidance",
    "clip_guidance",
    "clip_target",
    "compose",
    "drop_condition",
    "dynamic_threshold",
    "image_embed_fn",
    "null_cond",
    "static_threshold",
]
