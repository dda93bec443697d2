"""The headline experiment: two-stage vs single-stage sampling at equal image-model compute.

Four arms use one U-Net size and one image budget (images seen by the image model):
    (a) single-stage unconditional     decoder condition "none"
    (b) two-stage                      embedder + prior + decoder condition "embedding"
    (c) class-conditional              decoder condition "label"
    (d) class-conditional two-stage    class-conditional prior + decoder condition "embedding+label"
Every arm is sampled with the same sampler and step count for several seed sets and scored on the
evaluation classifier's features, beside diagnostics that explain the number (vcdm.eval.diagnostics): the
metric's floor (real held-out images), an oracle arm (the two-stage decoder given real embeddings), the
prior's Frechet distance along its training, memorisation and time. Harvey & Wood (2023) report 25-50%
lower FID for two-stage sampling. With several training seeds every arm is trained once per seed and a
summary gives the spread over them.

Layout of out_dir (one training replicate; with several, each is out_dir/train_seed_<s>/ laid out like
this, beside config.json, summary.json and a summary report.md):
    config.json                               the benchmark's resolved (scaled) RunConfig
    single/ two_stage/ class/ class_two_stage/ one run directory per arm (vcdm.stages layout)
    results.json                              every figure measured; an interrupted benchmark resumes
    report.md, fid_vs_budget.png, samples_<arm>.png
"""

from vcdm.quality.arms import (
    ARMS,
    GOAL,
    Arm,
    arm_config,
    quality_config,
    scale_budgets,
    select_arms,
    with_train_seed,
)
from vcdm.quality.benchmark import (
    Evaluation,
    image_seeds,
    load_splits,
    prepare_evaluation,
    run_quality_benchmark,
    sample_arm,
)
from vcdm.quality.report import summarize, summarize_replicates, write_report, write_summary

__all__ = [
    "ARMS",
    "GOAL",
    "Arm",
    "Evaluation",
    "arm_config",
    "image_seeds",
    "load_splits",
    "prepare_evaluation",
    "quality_config",
    "run_quality_benchmark",
    "sample_arm",
    "scale_budgets",
    "select_arms",
    "summarize",
    "summarize_replicates",
    "with_train_seed",
    "write_report",
    "write_summary",
]
