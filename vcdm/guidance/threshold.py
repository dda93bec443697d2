"""Static and dynamic thresholding of x0_hat (Saharia et al. 2022, Imagen, Sec. 2.3) as denoiser wrappers.

Large classifier-free guidance weights push x0_hat outside the data range [-1, 1]; clipping it at every
step keeps the samples from saturating. Apply a threshold last, after any guidance.
"""

from __future__ import annotations

from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.samplers.common import Denoiser


def static_threshold(denoiser: Denoiser, lo: float = -1.0, hi: float = 1.0) -> Denoiser:
    """x0_hat <- clip(x0_hat, lo, hi) (Imagen's static thresholding).

    Args:
        denoiser: any denoiser.
        lo, hi: the data range, lo < hi.
    Returns:
        a denoiser with the same contract.
    """
    if not lo < hi:
        raise VcdmError(f"static threshold: expected lo < hi, got lo={lo}, hi={hi}")

    def thresholded(x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
        return denoiser(x, sigma, cond).clamp(lo, hi)

    return thresholded


def quantile_per_sample(values: Tensor, p: float) -> Tensor:
    """The p-quantile of each sample's entries, with linear interpolation (as torch.quantile).

    torch.quantile refuses inputs of more than 2^24 entries; this sorts each row instead.

    Args:
        values: (B, ...) float.
        p: in [0, 1].
    Returns:
        (B,) float.
    """
    flat = values.flatten(1).sort(dim=1).values  # (B, N)
    pos = p * (flat.shape[1] - 1)
    lo = int(pos)
    hi = min(lo + 1, flat.shape[1] - 1)
    return flat[:, lo] + (pos - lo) * (flat[:, hi] - flat[:, lo])


def dynamic_threshold(denoiser: Denoiser, percentile: float = 0.995) -> Denoiser:
    """Imagen's dynamic thresholding: per sample s = max(1, quantile_p(|x0_hat|)), x0_hat <- clip(x0_hat,
    -s, s) / s (Saharia et al. 2022, Sec. 2.3).

    A sample whose p-quantile of |x0_hat| is at most 1 is only clipped to [-1, 1] (the identity when all its
    values lie there); a saturated one is clipped at its own quantile and scaled back into [-1, 1].

    Args:
        denoiser: any denoiser; its images are assumed to live in [-1, 1].
        percentile: p in (0, 1].
    Returns:
        a denoiser with the same contract whose outputs lie in [-1, 1].
    """
    if not 0 < percentile <= 1:
        raise VcdmError(f"dynamic threshold: percentile must be in (0, 1], got {percentile}")

    def thresholded(x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
        denoised = denoiser(x, sigma, cond)
        s = quantile_per_sample(denoised.abs().float(), percentile).clamp(min=1)  # (B,)
        s = s.reshape(-1, *([1] * (denoised.ndim - 1))).to(denoised.dtype)
        return denoised.clamp(-s, s) / s

    return thresholded
