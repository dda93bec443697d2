"""`vcdm fid`: the features of one side of a comparison (a run directory, an image folder, an .npz of
images or of statistics, or the embedded MNIST) and the comparison itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.eval.fid import FeatureStats, feature_stats, frechet_distance
from vcdm.eval.prdc import precision_recall


@dataclass
class FeatureSet:
    """Features of one side of a FID comparison, or only their Gaussian statistics (a stats file)."""

    source: str
    features: Tensor | None  # (N, D), None when only statistics are known
    stats: FeatureStats | None = None

    @property
    def num(self) -> int:
        return len(self.features) if self.features is not None else self.stats.num_images

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        if self.features is not None:
            return feature_stats(self.features)
        return self.stats.mu, self.stats.sigma


def _expected_shape(extractor) -> tuple[int | None, int | None]:
    """(image_size, channels) the extractor needs, or (None, None) when it resizes itself (Inception)."""
    cfg = getattr(getattr(extractor, "model", None), "cfg", None)
    return (cfg.image_size, cfg.in_channels) if cfg is not None else (None, 3)


def load_feature_set(
    source: str | Path,
    extractor,
    *,
    num: int | None = None,
    seed: int = 0,
    stage: str = "decoder",
    sample_cfg=None,
) -> FeatureSet:
    """Features of `source`: a run directory (samples `num` images from it, seeds seed..seed+num-1), an image
    folder, an .npz of images, an .npz of statistics (`save_stats`), or "mnist[:split]" (embedded)."""
    from vcdm.data import load_image_folder, load_mnist, load_npz
    from vcdm.eval.fid import load_stats

    source = str(source)
    path = Path(source)
    size, channels = _expected_shape(extractor)
    if source.startswith("mnist") and not path.exists():
        split = source.split(":", 1)[1] if ":" in source else "test"
        images = load_mnist(split, image_size=size, channels=channels, limit=num).as_float()
    elif path.is_dir() and (path / "config.json").is_file():
        from vcdm.pipeline import Pipeline

        if not num:
            raise VcdmError(f"{path} is a run directory: pass --num, the number of images to sample from it")
        images = Pipeline.from_run(path, stage)(range(seed, seed + num), sample_cfg).images
    elif path.is_dir():
        images = load_image_folder(path, image_size=size, channels=channels, limit=num).as_float()
    elif path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            is_stats = "mu" in z.files and "sigma" in z.files
        if is_stats:
            stats = load_stats(path)
            if stats.extractor != extractor.name:
                raise VcdmError(
                    f"{path}: statistics were computed with {stats.extractor!r}, not {extractor.name!r}"
                )
            return FeatureSet(source, None, stats)
        images = load_npz(path, image_size=size, channels=channels, limit=num).as_float()
    else:
        raise VcdmError(f"{source}: expected a run directory, an image folder, an .npz or 'mnist[:split]'")
    return FeatureSet(source, extractor.features(images))


def compare(a: FeatureSet, b: FeatureSet, *, k: int = 3) -> dict[str, float]:
    """FID between two feature sets (and precision / recall of `a` against `b` when both have features)."""
    mu1, s1 = a.gaussian()
    mu2, s2 = b.gaussian()
    out = {"fid": frechet_distance(mu1, s1, mu2, s2), "n_a": a.num, "n_b": b.num}
    if a.features is not None and b.features is not None:
        out["precision"], out["recall"] = precision_recall(b.features, a.features, k=k)
    return out
