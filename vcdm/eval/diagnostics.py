"""Diagnostics that explain a two-stage vs single-stage FID comparison (the quality benchmark's report).

- the oracle share: how much of the gain that *real* embeddings would give the prior's samples recover;
- the prior's own quality: Frechet distance between sampled and real (normalised) embeddings;
- memorisation: each sample's nearest-training-image distance against that of held-out real images;
- seed statistics, relative changes, throughput and time shares;
- a dependency-free line plot (PIL) for the FID-vs-budget figure (matplotlib when installed).

Everything here works on numbers, features and distances; nothing trains or samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vcdm.errors import VcdmError
from vcdm.eval.fid import as_feature_array, fid_from_features
from vcdm.eval.memorization import near_copy_fraction


def relative_change(value: float, base: float) -> float:
    """(value - base) / base: -0.4 means 40% lower than `base`; nan when base is 0 or either is not finite."""
    if not (math.isfinite(value) and math.isfinite(base)) or base == 0:
        return math.nan
    return (value - base) / base


def oracle_share(fid_single: float, fid_two: float, fid_oracle: float) -> float:
    """Share of the oracle's FID gain that the two-stage model's prior recovers.

    share = (FID_single - FID_two) / (FID_single - FID_oracle): 1 when sampled embeddings are as good as
    real ones, 0 when the two-stage model is no better than single-stage, negative when it is worse.
    VCDM (Harvey & Wood 2023) reports 0.81-0.87. nan when the oracle does not beat single-stage (the gain
    to share is zero or negative) or any value is not finite.
    """
    values = (fid_single, fid_two, fid_oracle)
    gain = fid_single - fid_oracle
    if not all(math.isfinite(v) for v in values) or gain <= 0:
        return math.nan
    return (fid_single - fid_two) / gain


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, spread and range of one figure over sampling seeds.

    Args:
        values: one value per seed (at least one).

    Returns:
        {"mean", "std" (sample std, ddof 1; 0 for one seed), "min", "max", "n"}.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise VcdmError(f"seed values: expected a non-empty 1-D sequence, got shape {a.shape}")
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "std": std, "min": float(a.min()), "max": float(a.max()), "n": len(a)}


def embedding_frechet(sampled: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of sampled and real embeddings (the prior's own quality).

    Pass both normalised the way the prior sees them (`EmbeddingStats.normalize`), so every dimension
    counts on the same scale. Same formula as FID (Heusel et al. 2017, Eq. 6), on embeddings.

    Args:
        sampled: (N1, D) embeddings drawn from the prior, N1 >= 2.
        real: (N2, D) embeddings of real images (held-out ones, to see generalisation), N2 >= 2.

    Returns:
        The distance (>= 0; about 0 for two large samples of one distribution).
    """
    s, r = as_feature_array(sampled, "sampled"), as_feature_array(real, "real")
    if s.shape[1] != r.shape[1]:
        raise VcdmError(f"sampled/real: embedding dimensions differ ({s.shape[1]} vs {r.shape[1]})")
    return fid_from_features(s, r)


def _distances(d: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(d, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0 or not np.isfinite(a).all():
        raise VcdmError(f"{name}: expected a non-empty 1-D array of finite distances, got shape {a.shape}")
    return a


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs of a and b."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def memorization_summary(
    sample_nn: np.ndarray, heldout_nn: np.ndarray, *, percentile: float = 1.0
) -> dict[str, float]:
    """Compare samples' nearest-training-image distances with held-out real images' distances.

    A model that copies its training set has a distribution shifted toward 0 (median ratio below 1, many
    near copies); one that generalises looks like the held-out images (ratio about 1, near copies about
    percentile / 100). A ratio well above 1 means the samples are off the data manifold, not copies.

    Args:
        sample_nn: (Ns,) distance of each sample to its nearest training image (evaluation features).
        heldout_nn: (Nh,) the same for held-out real images, in the same feature space.
        percentile: near-copy threshold, a percentile of heldout_nn (see `near_copy_fraction`).

    Returns:
        {"sample_p1", "sample_p5", "sample_median", "heldout_p1", "heldout_p5", "heldout_median",
         "median_ratio" (sample median / held-out median), "ks" (KS statistic between the two),
         "near_copy" (fraction of samples below the threshold)}.
    """
    s = _distances(sample_nn, "sample_nn")
    h = _distances(heldout_nn, "heldout_nn")
    sp1, sp5, smed = np.percentile(s, [1.0, 5.0, 50.0])
    hp1, hp5, hmed = np.percentile(h, [1.0, 5.0, 50.0])
    return {
        "sample_p1": float(sp1),
        "sample_p5": float(sp5),
        "sample_median": float(smed),
        "heldout_p1": float(hp1),
        "heldout_p5": float(hp5),
        "heldout_median": float(hmed),
        "median_ratio": float(smed / hmed) if hmed > 0 else math.nan,
        "ks": ks_distance(s, h),
        "near_copy": near_copy_fraction(s, h, percentile),
    }


def throughput(meta: Mapping[str, object]) -> dict[str, float]:
    """Images seen, training seconds and images/s of a stage, from its export's model.json meta."""
    nimg, seconds = int(meta.get("nimg", 0)), float(meta.get("seconds", 0.0))
    return {
        "nimg": nimg,
        "seconds": seconds,
        "images_per_second": nimg / seconds if seconds > 0 else math.nan,
    }


def time_share(part_seconds: float, total_seconds: float) -> float:
    """part / total (e.g. the prior's share of two-stage sampling time); nan when total is not positive."""
    return part_seconds / total_seconds if total_seconds > 0 else math.nan


# ---- the FID-vs-budget figure ----

_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def plot_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Line plot of named (x, y) series to a PNG: matplotlib if installed, else drawn with PIL.

    Args:
        series: name -> (xs, ys), each a sequence of finite numbers of equal length (>= 1).
        path: output .png path.
        title, xlabel, ylabel: labels.

    Returns:
        The path written.
    """
    path = Path(path)
    clean = {}
    for name, (xs, ys) in series.items():
        pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
        if pts:
            clean[name] = pts
    if not clean:
        raise VcdmError(f"{path}: nothing to plot (no finite points)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_pil(clean, path, title, xlabel, ylabel)
        return path
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, pts in clean.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi] (1-2-5 steps)."""
    span = max(hi - lo, 1e-12)
    raw = span / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _plot_pil(series: dict[str, list[tuple[float, float]]], path: Path, title: str, xlabel: str,
              ylabel: str) -> None:  # fmt: skip
    from PIL import Image, ImageDraw

    # the legend sits in its own band between the title and the plot box
    w, h, left, right, bottom = 640, 440, 70, 20, 60
    top = 44 + 16 * len(series)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    xs = [p[0] for pts in series.values() for p in pts]
    ys = [p[1] for pts in series.values() for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = 0.0, max(ys) * 1.1 if max(ys) > 0 else 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))  # fmt: skip

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _ticks(y0, y1):
        _, py = to_px(x0, t)
        draw.line([left, py, w - right, py], fill=(225, 225, 225))
        draw.text((left - 6, py), _fmt(t), fill="black", anchor="rm")
    for t in _ticks(x0, x1):
        px, _ = to_px(t, y0)
        draw.line([px, h - bottom, px, h - bottom + 4], fill="black")
        draw.text((px, h - bottom + 8), _fmt(t), fill="black", anchor="mt")
    draw.text((w / 2, 12), title, fill="black", anchor="mt")
    draw.text(((left + w - right) / 2, h - 22), xlabel, fill="black", anchor="mt")
    draw.text((8, top - 16), ylabel, fill="black")
    for i, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        px = [to_px(x, y) for x, y in pts]
        if len(px) > 1:
            draw.line(px, fill=colour, width=2)
        for cx, cy in px:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        ly = 36 + 16 * i
        draw.line([left + 10, ly, left + 30, ly], fill=colour, width=2)
        draw.text((left + 36, ly), name, fill="black", anchor="lm")
    img.save(path)
