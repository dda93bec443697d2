"""Guidance: functions from denoiser to denoiser."""

from vcdm.guidance.cfg import classifier_free, drop_condition, null_cond
from vcdm.guidance.classifier import classifier_guidance, load_noisy_classifier, train_noisy_classifier
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
    "load_noisy_classifier",
    "null_cond",
    "static_threshold",
    "train_noisy_classifier",
]
