"""Helpers shared by the gradient guidances, and composition of denoiser -> denoiser wrappers."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from vcdm.samplers.common import Denoiser

Wrapper = Callable[[Denoiser], Denoiser]


def compose(*wrappers: Wrapper | None) -> Wrapper:
    """One wrapper that applies `wrappers` in order: compose(f, g)(D) = g(f(D)); None entries are skipped.

    The first wrapper is innermost, so e.g. compose(cfg, classifier, threshold) thresholds the classifier-
    guided, classifier-free-guided denoiser.
    """
    active = [w for w in wrappers if w is not None]

    def wrap(denoiser: Denoiser) -> Denoiser:
        for w in active:
            denoiser = w(denoiser)
        return denoiser

    return wrap


def in_sigma_range(sigma: Tensor, sigma_range: tuple[float, float] | None) -> bool:
    """Whether a step's noise level (the first entry of the (B,) sigma; samplers use one level per step)
    lies in the closed interval sigma_range; None means everywhere."""
    if sigma_range is None:
        return True
    s = float(sigma.reshape(-1)[0])
    return sigma_range[0] <= s <= sigma_range[1]


def shift_by_gradient(denoised: Tensor, sigma: Tensor, grad: Tensor, scale: float) -> Tensor:
    """D_s = D + s sigma^2 grad_x log p (Dhariwal & Nichol 2021, Sec. 4.1, in VE coordinates).

    With x = x0 + sigma n, Tweedie's formula gives D(x) = x + sigma^2 grad_x log p(x), so adding s times a
    log-likelihood gradient to the score adds s sigma^2 times it to the denoiser.

    Args:
        denoised: (B, ...) the unguided x0_hat.
        sigma: (B,) or scalar noise levels.
        grad: (B, ...) gradient of the guiding log-likelihood w.r.t. x.
        scale: s.
    Returns:
        (B, ...) the guided x0_hat, in denoised's dtype.
    """
    s2 = sigma.reshape(-1).expand(denoised.shape[0]).to(grad.dtype) ** 2
    shift = scale * s2.reshape(-1, *([1] * (grad.ndim - 1))) * grad
    return (denoised + shift.to(denoised.dtype)).to(denoised.dtype)
