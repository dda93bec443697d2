"""The benchmark's four arms and their configs: one U-Net size and one image budget for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from vcdm.config import DecoderStage, RunConfig, preset
from vcdm.errors import VcdmError


@dataclass(frozen=True)
class Arm:
    key: str  # its run directory under out_dir
    title: str
    section: str  # the RunConfig section ("decoder" | "baseline") whose U-Net and budget it trains with
    condition: str  # the decoder's condition
    class_prior: bool = False  # two-stage arms: whether the prior is class-conditional

    @property
    def two_stage(self) -> bool:
        return "embedding" in self.condition

    @property
    def labelled(self) -> bool:
        return "label" in self.condition


ARMS = (
    Arm("single", "(a) single-stage", "baseline", "none"),
    Arm("two_stage", "(b) two-stage", "decoder", "embedding"),
    Arm("class", "(c) class-conditional", "baseline", "label"),
    Arm("class_two_stage", "(d) class-cond. two-stage", "decoder", "embedding+label", class_prior=True),
)
SINGLE, TWO, CLASS, CLASS_TWO = ARMS
ORACLE, FLOOR = "oracle", "floor"
GOAL = -0.40  # the project's target: two-stage FID at least 40% below single-stage


def select_arms(keys: Sequence[str] | None) -> tuple[Arm, ...]:
    """The arms named by `keys` (None: all four), in the benchmark's order. (a) and (b) are always in: they
    are the comparison the benchmark exists for; (c) and (d) need labels and double the training."""
    if keys is None:
        return ARMS
    known = {arm.key: arm for arm in ARMS}
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise VcdmError(f"unknown arm(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(known)}")
    missing = [k for k in (SINGLE.key, TWO.key) if k not in keys]
    if missing:
        raise VcdmError(f"arms must include {SINGLE.key} and {TWO.key} (the comparison itself); missing: "
                        f"{', '.join(missing)}")  # fmt: skip
    return tuple(arm for arm in ARMS if arm.key in keys)


def quality_config() -> RunConfig:
    """The CPU configuration (about 20 min per training seed on 2 idle cores): the demo's nets and budgets (48k images per decoder).

    Sampling: Heun with 10 steps in bf16 for every arm (measured on 500 samples at 32k training images: FID
    within 1-2 points of 18 fp32 steps or 20 Euler steps, at about half the time).
    """
    cfg = preset("mnist")
    return replace(
        cfg, sample=replace(cfg.sample, sampler="heun", num_steps=10, prior_num_steps=18, precision="bf16")
    )


def scale_budgets(cfg: RunConfig, scale: float) -> RunConfig:
    """Multiply every stage's training budget (images seen) by `scale`, rounded to whole batches."""
    if not scale > 0:
        raise VcdmError(f"--scale must be positive, got {scale!r}")

    def s(train):
        return replace(
            train, total_nimg=max(1, round(train.total_nimg * scale / train.batch_size)) * train.batch_size
        )

    return replace(
        cfg,
        embedder=replace(cfg.embedder, train=s(cfg.embedder.train)),
        clip=replace(cfg.clip, train=s(cfg.clip.train)),
        prior=replace(cfg.prior, train=s(cfg.prior.train)),
        decoder=replace(cfg.decoder, train=s(cfg.decoder.train)),
        baseline=replace(cfg.baseline, train=s(cfg.baseline.train)),
    )


def arm_config(cfg: RunConfig, arm: Arm) -> RunConfig:
    """The run config of one arm: its decoder condition, and a class-conditional prior for arm (d)."""
    stage: DecoderStage = replace(getattr(cfg, arm.section), condition=arm.condition)
    prior = replace(cfg.prior, class_conditional=arm.class_prior)
    return replace(cfg, prior=prior, **{arm.section: stage})


def check_fair(cfg: RunConfig) -> None:
    d, b = cfg.decoder, cfg.baseline
    if d.net != b.net or d.train.total_nimg != b.train.total_nimg or d.train.batch_size != b.train.batch_size:
        raise VcdmError("decoder and baseline must share net, train.total_nimg and train.batch_size: the "
                        "benchmark compares the arms at the same U-Net size and image budget")  # fmt: skip


def with_train_seed(cfg: RunConfig, seed: int) -> RunConfig:
    """The config of training replicate `seed`: every stage's `train.seed` set to it (data splits, the
    evaluation classifier and the sampling seeds stay the same)."""
    if seed < 0:
        raise VcdmError(f"training seeds must be non-negative integers, got {seed}")
    return replace(
        cfg,
        embedder=replace(cfg.embedder, train=replace(cfg.embedder.train, seed=seed)),
        clip=replace(cfg.clip, train=replace(cfg.clip.train, seed=seed)),
        prior=replace(cfg.prior, train=replace(cfg.prior.train, seed=seed)),
        decoder=replace(cfg.decoder, train=replace(cfg.decoder.train, seed=seed)),
        baseline=replace(cfg.baseline, train=replace(cfg.baseline.train, seed=seed)),
    )
