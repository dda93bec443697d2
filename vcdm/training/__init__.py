"""The shared training loop, EMA, checkpoints and distributed helpers."""

from vcdm.training.loop import TrainConfig, TrainingInterrupted, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "train"]
