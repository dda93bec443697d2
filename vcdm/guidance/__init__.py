"""Guidance: functions from denoiser to denoiser."""

from vcdm.guidance.cfg import classifier_free, drop_condition, null_cond

__all__ = ["classifier_free", "drop_condition", "null_cond"]
