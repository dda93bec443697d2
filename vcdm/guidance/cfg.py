"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser -> denoiser wrapper, and its training-side
condition dropout."""

from __future__ import annotations

import torch
from torch import Tensor

from vcdm.samplers.common import Denoiser


def null_cond(cond: dict[str, Tensor] | None, batch: int, device: torch.device | str) -> dict[str, Tensor]:
    """The same conditioning with every sample's condition dropped (the learned null)."""
    out = dict(cond or {})
    out["null"] = torch.ones(batch, dtype=torch.bool, device=device)
    return out


def _cat_cond(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    keys = set(a) | set(b)
    missing = [k for k in keys if k not in a or k not in b]
    if missing:
        raise ValueError(f"conditioning keys {missing} are missing on one side")
    return {k: torch.cat([a[k], b[k]]) for k in keys}


def classifier_free(
    denoiser: Denoiser, guidance: float, *, sigma_range: tuple[float, float] | None = None
) -> Denoiser:
    """D_w = D(x, sigma, null) + w (D(x, sigma, cond) - D(x, sigma, null)), in one batched call.

    Args:
        denoiser: the conditional denoiser; its network must understand cond["null"].
        guidance: w. w = 1 returns the conditional denoiser exactly; w = 0 the unconditional one.
        sigma_range: (lo, hi): guide only for sigma in [lo, hi] (guidance interval, Kynkaanniemi et al.
            2024); elsewhere the conditional denoiser is used alone.
    Returns:
        a denoiser with the same contract.
    """
    if guidance == 1.0:
        return denoiser

    def guided(x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
        b = x.shape[0]
        sigma = sigma.reshape(-1).expand(b)
        if sigma_range is not None:
            s = float(sigma[0])
            if not sigma_range[0] <= s <= sigma_range[1]:
                return denoiser(x, sigma, cond)
        if guidance == 0.0:
            return denoiser(x, sigma, null_cond(cond, b, x.device))
        c = dict(cond or {})
        c.setdefault("null", torch.zeros(b, dtype=torch.bool, device=x.device))
        both = denoiser(
            torch.cat([x, x]), torch.cat([sigma, sigma]), _cat_cond(c, null_cond(cond, b, x.device))
        )
        d_cond, d_uncond = both[:b], both[b:]
        return d_uncond + guidance * (d_cond - d_uncond)

    return guided


def drop_condition(
    cond: dict[str, Tensor] | None, p: float, batch: int, generator: torch.Generator
) -> dict[str, Tensor] | None:
    """Training-time condition dropout: mark each sample's condition as null with probability p."""
    if cond is None or p <= 0:
        return cond
    out = dict(cond)
    device = next(iter(cond.values())).device
    drop = (torch.rand(batch, generator=generator, device=generator.device) < p).to(device)
    out["null"] = drop | out.get("null", torch.zeros_like(drop))
    return out
