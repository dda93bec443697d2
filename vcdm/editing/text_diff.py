"""Editing with words: DALL-E 2's text diffs (Ramesh et al. 2022, Sec. 3.3).

An image's latent is (y, x_T): y its CLIP image embedding, x_T the DDIM inversion of the decoder under y. A
caption change "from" -> "to" gives the text diff z_d = normalize(z_to - z_from) of their CLIP text embeddings;
the edit rotates y toward it, y_theta = slerp(y, z_d, theta), and decodes (y_theta, x_T) deterministically
(DDIM, eta 0), so theta = 0 reconstructs the image and the layout carried by x_T is kept as theta grows
(DALL-E 2 shows theta in [0, 0.5]). y and the texts must live in one space: the run's embedder must encode text
(embedder.kind clip-trained, or a local CLIP). A decoder that also reads the caption ("embedding+text") is
given "no caption" (a zero text embedding; it was trained with caption-only dropout), so y alone steers it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.editing.latent import check_images, embed, slerp
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free
from vcdm.pipeline import Pipeline, sampling_sigmas
from vcdm.samplers import ddim, ddim_invert


def _check(pipe: Pipeline) -> None:
    if pipe.condition not in ("embedding", "embedding+text"):
        raise VcdmError(f"text diffs edit the embedding y: they need a decoder conditioned on it (decoder.condition "
                        f"'embedding' or 'embedding+text'), not {pipe.condition!r}")  # fmt: skip
    if pipe.embedder is None or not hasattr(pipe.embedder, "encode_text"):
        raise VcdmError("text diffs need an embedder that encodes text into y's space (embedder.kind "
                        "'clip-trained' or 'clip'); load the pipeline with its embedder")  # fmt: skip


def _cond(pipe: Pipeline, y_norm: Tensor) -> dict[str, Tensor]:
    cond = {"emb": y_norm}
    if "text" in pipe.condition:  # no caption: y alone steers the decoder
        cond["text_emb"] = torch.zeros(
            len(y_norm), pipe.decoder_meta["net"]["text_dim"], device=y_norm.device
        )
    return cond


@torch.no_grad()
def text_direction(pipe: Pipeline, text_from: str, text_to: str) -> Tensor:
    """z_d = normalize(z_to - z_from): the unit text diff in CLIP space, float32 (D,) on the pipeline's device."""
    _check(pipe)
    z = pipe.embedder.encode_text([text_from, text_to]).float().to(pipe.device)  # (2, D), checked prompts
    if torch.allclose(z[0], z[1]):
        raise VcdmError(
            f"--from {text_from!r} and --to {text_to!r} have the same text embedding: no direction"
        )
    return F.normalize(z[1] - z[0], dim=0)


@torch.no_grad()
def text_diff(
    pipe: Pipeline,
    images: Tensor,
    text_from: str,
    text_to: str,
    thetas: Sequence[float],
    *,
    num_steps: int,
    guidance: float = 1.0,
    fixed_point_iters: int = 0,
) -> Tensor:
    """Edit images by the text diff from `text_from` to `text_to`, keeping each image's inverted x_T.

    Args:
        pipe: a two-stage pipeline with its embedder (`vcdm.editing.load_pipeline`).
        images: float32 in [-1, 1] (B, C, H, W) of the pipeline's image shape.
        thetas: S rotation amounts in [0, 1] (slerp from y toward the text diff); 0 reconstructs.
        num_steps: DDIM steps for the inversion and the decoding.
        guidance: classifier-free weight of the decoder when decoding (inversion uses 1).
    Returns:
        float32 in [-1, 1] (B, S, C, H, W) on the pipeline's device.
    """
    _check(pipe)
    t = torch.as_tensor(list(thetas), dtype=torch.float32).reshape(-1)
    if len(t) == 0 or bool(((t < 0) | (t > 1)).any()):
        raise VcdmError(f"--strengths: give rotation amounts in [0, 1], got {t.tolist()}")
    z_d = text_direction(pipe, text_from, text_to)
    images = check_images(pipe, images)
    y_norm = embed(pipe, images)  # (B, D)
    sigmas = sampling_sigmas(pipe.decoder_diffusion, num_steps)
    x0 = pipe.latent_space.encode(images) if pipe.latent_space is not None else images
    x_T = ddim_invert(pipe.decoder, x0, sigmas, _cond(pipe, y_norm), fixed_point_iters=fixed_point_iters)
    y = pipe.stats.denormalize(y_norm)  # raw CLIP image embeddings
    b, s = len(images), len(t)
    y_t = slerp(y[:, None], z_d[None, None], t.to(y.device)[None, :]).float()  # (B, S, D)
    y_t = y_t * y.norm(dim=-1)[:, None, None] / y_t.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # keep |y|
    y_edit = pipe.stats.normalize(y_t.reshape(b * s, -1))
    x_Ts = x_T.repeat_interleave(s, dim=0)
    out = ddim(classifier_free(pipe.decoder, guidance), x_Ts, sigmas, _cond(pipe, y_edit), eta=0.0)
    out = pipe.latent_space.decode(out) if pipe.latent_space is not None else out.clamp(-1, 1)
    return out.reshape(b, s, *out.shape[1:])
