"""Networks: the embedding-conditioned U-Net decoder and the transformer prior (leaves of the package)."""

from vcdm.networks.prior import PriorConfig, PriorTransformer
from vcdm.networks.unet import UNet, UNetConfig

__all__ = ["PriorConfig", "PriorTransformer", "UNet", "UNetConfig"]
